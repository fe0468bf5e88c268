"""Compare trained runs whose validation splits differ, on the images that none of them trained on.

    python research/common_held_out.py RUN_DIR RUN_DIR [RUN_DIR...] [--out research/results/common_held_out.md]

Every seed carves its own validation split, so one run's validation accuracy is not comparable with
another's. This rebuilds each run's split from its config.json (same function, fraction and seed as
`s3f-edge train`), keeps the training images held out by every run, drops any whose bytes equal an
image some run trained on (duplicates inside the training folder would leak), and scores every run's
selected model on what is left, paired against the first run (research/compare.py). The test set is
not touched, so the choice of a model to bundle stays a validation-only decision.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "research"))

from compare import compare, correct_on  # noqa: E402

from s3f_edge.data.files import file_sha256  # noqa: E402
from s3f_edge.data.folders import Split, discover, stratified_split  # noqa: E402


def run_splits(run_dir: Path) -> tuple[Path, Split, Split]:
    options = json.loads((run_dir / "config.json").read_text())["options"]
    if options.get("paper_protocol"):
        raise SystemExit(f"{run_dir} was trained with --paper-protocol: it has no held-out validation split")
    dataset = discover(options["data_dir"])
    fit, held_out = stratified_split(dataset.train, options["val_fraction"], options["seed"])
    return Path(options["data_dir"]).resolve(), fit, held_out


def common_held_out(run_dirs: list[Path]) -> tuple[Split, int]:
    """The held-out images shared by every run, minus byte-duplicates of any run's training images;
    also returns how many shared images were dropped as duplicates."""
    splits = [run_splits(run) for run in run_dirs]
    if len({data for data, _, _ in splits}) != 1:
        raise SystemExit("the runs were trained on different dataset folders; compare runs of one dataset")
    held = [dict(zip(map(str, h.paths), h.labels)) for _, _, h in splits]
    shared = sorted(set.intersection(*(set(h) for h in held)))
    trained_bytes = {file_sha256(path) for _, fit, _ in splits for path in fit.paths}
    kept = [path for path in shared if file_sha256(Path(path)) not in trained_bytes]
    split = Split([Path(p) for p in kept], np.asarray([held[0][p] for p in kept], dtype=np.int64))
    return split, len(shared) - len(kept)


def render(run_dirs: list[Path], accuracies: list[float], results: list[dict | None], images: int,
           dropped: int) -> str:
    lines = [f"Images held out by every run: {images + dropped}; {dropped} dropped as byte-duplicates of an image "
             f"some run trained on; {images} scored.", "",
             "| Run | Own validation acc | Common held-out acc | − first run, points [95 % CI] | "
             "only this right / only first right | McNemar p |", "|---|---|---|---|---|---|"]
    for run, accuracy, result in zip(run_dirs, accuracies, results):
        own = json.loads((run / "metrics.json").read_text())["validation"]["accuracy"]
        if result is None:
            paired = "(reference) | - | -"
        else:
            low, high = result["difference_95ci"]
            paired = (f"{100 * result['difference']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] | "
                      f"{result['only_a_right']} / {result['only_b_right']} | {result['mcnemar_exact_p']:.2g}")
        lines.append(f"| {run.name} | {100 * own:.1f}% | {100 * accuracy:.1f}% | {paired} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run directories; the first is the reference")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("give at least two run directories")
    split, dropped = common_held_out(args.runs)
    if len(split) == 0:
        raise SystemExit("the runs share no held-out image; there is nothing to compare them on")
    correct = [correct_on(run / "model.keras", split) for run in args.runs]
    results = [None] + [compare(c, correct[0]) for c in correct[1:]]
    table = render(args.runs, [float(c.mean()) for c in correct], results, len(split), dropped)
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
