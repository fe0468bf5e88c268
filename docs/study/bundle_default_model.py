"""Bundle a trained brain MRI run as s3f-edge's default model (s3f_edge/assets/default_model/).

    .venv/bin/python docs/study/bundle_default_model.py RUN_DIR [--data ../shared/data/brain_tumor_mri]

Writes model.keras (optimizer state stripped), model.onnx (exported and parity-checked by
`s3f-edge export`), card.json (every number measured by this script) and MODEL_CARD.md rendered
from it. Both files are scored on the official and the de-duplicated test sets; the bundle is
refused above 20 MB.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from s3f_edge.export.onnx_export import ExportOptions, export_model  # noqa: E402
from s3f_edge.model import load_model  # noqa: E402
from s3f_edge.data.files import file_sha256  # noqa: E402
from s3f_edge.model.metadata import read_metadata, save_model_atomically  # noqa: E402
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR  # noqa: E402
from s3f_edge.train.evaluate import evaluate_folder  # noqa: E402

MAX_BYTES = 20 * 1024 * 1024
DUPLICATES = ROOT / "docs" / "brain_mri_test_duplicates.txt"
SUMMARY_KEYS = ("count", "accuracy", "f1_macro", "f1_weighted", "cohen_kappa", "mcc", "roc_auc_macro")


def summary(report: dict) -> dict:
    metrics = report["metrics"]
    return {**{key: metrics[key] for key in SUMMARY_KEYS},
            "recall_per_class": {name: row["recall"] for name, row in metrics["per_class"].items()},
            "confusion_matrix": metrics["confusion_matrix"]}


def bundle(run_dir: Path, data_dir: Path, out_dir: Path = DEFAULT_MODEL_DIR) -> dict:
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    config = json.loads((run_dir / "config.json").read_text())
    training = json.loads((run_dir / "metrics.json").read_text())
    with tempfile.TemporaryDirectory() as scratch:
        stage = Path(scratch) / "bundle"
        stage.mkdir()
        metadata = read_metadata(run_dir / "model.keras")
        save_model_atomically(load_model(run_dir / "model.keras"), stage / "model.keras",
                              {**metadata, "bundled_as": "s3f-edge default model"})
        export = export_model(stage / "model.keras", ExportOptions(out_dir=Path(scratch) / "export"))
        shutil.copy2(export.onnx_path, stage / "model.onnx")
        scores = {}
        for name in ("model.keras", "model.onnx"):
            started = time.perf_counter()
            official = evaluate_folder(stage / name, data_dir / "test", Path(scratch) / f"eval-{name}")
            dedup = evaluate_folder(stage / name, data_dir / "test", Path(scratch) / f"dedup-{name}", exclude=DUPLICATES)
            scores[name] = {"official_test": summary(official), "deduplicated_test": summary(dedup),
                            "excluded_duplicates": dedup["excluded_files"],
                            "seconds": round(time.perf_counter() - started, 1)}
        files = {name: {"bytes": (stage / name).stat().st_size, "sha256": file_sha256(stage / name)}
                 for name in ("model.keras", "model.onnx")}
        total = sum(f["bytes"] for f in files.values())
        if total > MAX_BYTES:
            raise SystemExit(f"bundle is {total / 2**20:.1f} MB, over the 20 MB limit; bundle a smaller model")
        options = config["options"]
        card = {
            "name": f"S3F-Net {options['fusion']} {options['variant'].upper()} ({options['model']}), brain MRI, "
                    f"{options['image_size'][0]}x{options['image_size'][1]}",
            "created": time.strftime("%Y-%m-%d"),
            "class_names": metadata["class_names"],
            "preprocessing": metadata["preprocessing"],
            "training": {
                "data": "brain_tumor_mri (Nickparvar, Kaggle; figshare/SARTAJ/Br35H), official train split",
                "protocol": config["protocol"], "counts": config["counts"], "options": options,
                "best_epoch": metadata.get("best_epoch"), "epochs_run": _epochs_run(run_dir),
                "train_seconds": training["timing"]["train_seconds"],
                "validation": {k: training["validation"][k] for k in ("accuracy", "f1_weighted")},
                "file_list_sha256": config["file_list_sha256"], "versions": config["versions"],
            },
            "evaluation": scores,
            "files": files,
            "total_bytes": total,
        }
        (stage / "card.json").write_text(json.dumps(card, indent=2))
        (stage / "MODEL_CARD.md").write_text(render_card(card))
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.iterdir():
            old.unlink()
        for new in stage.iterdir():
            shutil.copy2(new, out_dir / new.name)
    return card


def _epochs_run(run_dir: Path) -> int:
    with open(run_dir / "history.csv") as handle:
        return sum(1 for _ in handle) - 1


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def render_card(card: dict) -> str:
    training, options = card["training"], card["training"]["options"]
    keras_scores, onnx_scores = card["evaluation"]["model.keras"], card["evaluation"]["model.onnx"]
    rows = []
    for split, label in (("official_test", "official test"), ("deduplicated_test", "de-duplicated test")):
        for name, scores in (("model.keras", keras_scores), ("model.onnx", onnx_scores)):
            s = scores[split]
            rows.append(f"| {label} | {name} | {s['count']} | {_pct(s['accuracy'])} | {s['f1_macro']:.4f} | "
                        f"{s['cohen_kappa']:.4f} | {s['roc_auc_macro']:.4f} |")
    recalls = keras_scores["official_test"]["recall_per_class"]
    contract = card["preprocessing"]
    return f"""# Model card: s3f-edge default model

**{card['name']}** — bundled with s3f-edge so that `s3f-edge infer FOLDER/` works without `--model`.
Generated by `docs/study/bundle_default_model.py` on {card['created']}; every number below was
measured by that script (machine-readable copy: `card.json`).

**Not for clinical use.** This is a demonstration model for a deployment toolkit. It has not been
validated on any clinical population, scanner or protocol, and must not inform diagnosis or care.

## Intended use
Demonstrating and testing s3f-edge (export, parity, inference, benchmarks) on realistic inputs:
single 2-D axial/coronal/sagittal brain MRI slices, classified into {', '.join(card['class_names'])}.
Out of scope: 3-D volumes, other organs or modalities, children, any decision about a patient.

## Input contract (stored inside both files; the runtime applies it)
Decode with OpenCV, convert to {contract['channels']} channel(s), resize to
{contract['height']}×{contract['width']} with INTER_AREA, scale to float32 [0, 1]. Output: softmax over
{len(card['class_names'])} classes in the order above.

## Training
- Data: {training['data']}; {sum(training['counts']['train'].values())} images trained on,
  {sum(training['counts']['validation'].values())} held out for model selection.
- Protocol: {training['protocol']}.
- Recipe: Adam {options['learning_rate']}, batch {options['batch_size']}, balanced class weights,
  ReduceLROnPlateau ×{options['lr_factor']} (patience {options['lr_patience']}), seed {options['seed']},
  no augmentation; {training['epochs_run']} epochs at {options['image_size'][0]}×{options['image_size'][1]}
  on a 2-core CPU ({training['train_seconds'] / 60:.0f} min); best epoch {training['best_epoch']} chosen
  on the validation split (accuracy {_pct(training['validation']['accuracy'])}).
- The original work trains at 256×256 for 100–200 epochs on a GPU and reports 98.76 % on BRISC2025
  (a related, overlapping dataset) with test-set checkpoint selection; this model had a far smaller
  budget and a clean protocol.

## Results (test sets never seen during training or selection)

| Test set | File | Images | Accuracy | Macro-F1 | Cohen's κ | ROC-AUC (macro) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The de-duplicated set drops {keras_scores['excluded_duplicates']} test files that are byte-identical to a
training image or repeat another test image (`docs/brain_mri_test_duplicates.txt`).
Recall per class (official test, model.keras): {', '.join(f'{k} {_pct(v)}' for k, v in recalls.items())}.

Reproduce: `s3f-edge evaluate s3f_edge/assets/default_model/model.keras ../shared/data/brain_tumor_mri/test --out runs/default-model`
(add `--exclude docs/brain_mri_test_duplicates.txt` for the de-duplicated set).

## Files
| File | Bytes | sha256 |
|---|---|---|
""" + "\n".join(f"| {name} | {f['bytes']:,} | `{f['sha256']}` |" for name, f in card["files"].items()) + """

## Limitations
- One seed, one short CPU training; accuracy varies between runs (see `docs/reproduction.md`).
- The dataset mixes three public sources with uneven acquisition; images were resized to 224×224
  JPEG by the dataset's uploader before our own resize.
- No calibration analysis; the probabilities are not calibrated risks.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite MODEL_CARD.md from the bundled card.json (no training run needed)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "brain_tumor_mri")
    args = parser.parse_args()
    if args.render_only:
        card = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
        (DEFAULT_MODEL_DIR / "MODEL_CARD.md").write_text(render_card(card))
        return
    if args.run_dir is None:
        parser.error("give the run directory to bundle (or --render-only)")
    card = bundle(args.run_dir, args.data)
    official = card["evaluation"]["model.keras"]["official_test"]["accuracy"]
    print(f"bundled {card['name']}: {card['total_bytes'] / 2**20:.1f} MB, official test accuracy {_pct(official)}")


if __name__ == "__main__":
    main()
