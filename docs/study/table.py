"""The study's results table (markdown) from its run directories, so no number is copied by hand.

    python docs/study/table.py RUNS            (RUNS as given to run_study.sh)
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

NAMES = {
    "brain-s3f-bilinear": "S³F-Net, bilinear (SN1)",
    "brain-s3f-concat": "S³F-Net, concat (SN1)",
    "brain-baseline": "Spatial baseline",
    "brain-spectral": "Spectral-only (SN1)",
    "busi-s3f-concat": "S³F-Net, concat (SN2)",
    "busi-baseline": "Spatial baseline",
}


def wall_times(runs: Path) -> dict[str, int]:
    path = runs / "wall_times.txt"
    if not path.exists():
        return {}
    return {name: int(seconds) for name, seconds, _ in (line.split() for line in path.read_text().splitlines())}


def row(run: Path, wall: dict[str, int]) -> list[str] | None:
    if not (run / "metrics.json").exists():
        return None
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    with open(run / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    best = max(history, key=lambda r: float(r["val_selection_score"]))
    test = metrics["test"]
    dedup_path = run / "evaluate-dedup" / "metrics.json"
    dedup = json.loads(dedup_path.read_text())["metrics"]["accuracy"] if dedup_path.exists() else None
    size = "×".join(str(s) for s in config["options"]["image_size"])
    minutes = f"{wall[run.name] / 60:.0f}" if run.name in wall else "-"
    return [NAMES.get(run.name, run.name), size, f"{len(history)} ({int(best['epoch']) + 1})", minutes,
            str(config["options"]["seed"]), f"{metrics['validation']['accuracy']:.3f}",
            f"{test['accuracy']:.3f}", "-" if dedup is None else f"{dedup:.3f}", f"{test['f1_macro']:.3f}",
            f"{test['cohen_kappa']:.3f}", f"{test['roc_auc_macro']:.3f}"]


def table(runs: Path, prefix: str) -> str:
    header = ["Model", "Size", "Epochs (best)", "Wall min", "Seed", "Val acc", "Test acc", "Test acc de-dup",
              "Macro-F1", "κ", "AUC"]
    wall = wall_times(runs)
    rows = [r for r in (row(run, wall) for run in sorted(runs.glob(f"{prefix}-*")) if run.is_dir()) if r]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/study")
    for prefix in ("brain", "busi"):
        print(f"\n{prefix}\n")
        print(table(runs, prefix))
