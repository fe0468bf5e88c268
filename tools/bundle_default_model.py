"""Bundle a trained brain MRI run as s3f-edge's default model (s3f_edge/assets/default_model/).

    .venv/bin/python tools/bundle_default_model.py RUN_DIR [--data $S3F_EDGE_DATA/brain_tumor_mri]
    .venv/bin/python tools/bundle_default_model.py --calibrate    # fit calibration, re-export, re-measure
    .venv/bin/python tools/bundle_default_model.py --reexport     # the bundled model.keras as it is

Writes model.keras (optimizer state stripped), model.onnx (exported and parity-checked by
`s3f-edge export`), card.json (every number measured by this script) and MODEL_CARD.md rendered
from it. Both files are scored on the official and the de-duplicated test sets; the bundle is
refused above 20 MB. ``--reexport`` keeps model.keras byte for byte (its calibration too) and
exports and measures everything else again, e.g. after the export changed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s3f_edge.data.files import file_sha256  # noqa: E402
from s3f_edge.export.onnx_export import ExportOptions, export_model  # noqa: E402
from s3f_edge.model import load_model  # noqa: E402
from s3f_edge.model.metadata import read_metadata, save_model_atomically  # noqa: E402
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR  # noqa: E402
from s3f_edge.testing import require_data  # noqa: E402
from s3f_edge.train.evaluate import evaluate_folder  # noqa: E402

MAX_BYTES = 20 * 1024 * 1024
DUPLICATES = ROOT / "docs" / "brain_mri_test_duplicates.txt"
SUMMARY_KEYS = ("count", "accuracy", "f1_macro", "f1_weighted", "cohen_kappa", "mcc", "roc_auc_macro", "ece")


def summary(report: dict) -> dict:
    metrics = report["metrics"]
    return {**{key: metrics[key] for key in SUMMARY_KEYS if key in metrics},
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
            dedup = evaluate_folder(stage / name, data_dir / "test", Path(scratch) / f"dedup-{name}",
                                    exclude=DUPLICATES)
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


def calibrate_bundle(data_root: Path, out_dir: Path = DEFAULT_MODEL_DIR, refit: bool = True) -> dict:
    """Calibrate the bundled model on its own training and validation images (the split it was trained with),
    re-export it with both outputs, and measure what refusal and the temperature do; rewrite the bundle's card.

    Refusal is measured on the brain MRI test set (in distribution: should be low), on breast ultrasound
    (BUSI test, 156 images), on other modalities and photographs (benchmarks/ood_sets.py) and on corrupted brain
    MRI (report only), for model.keras, model.onnx and the FP16 and INT8 exports of it.

    Args:
        data_root: the folder holding brain_tumor_mri/ and busi/.
        out_dir: the bundle (its model.keras and card.json are read, every file rewritten).
        refit: fit the calibration afresh; False (``--reexport``) keeps the bundled, already calibrated
            model.keras as it is, with the calibration stored in it, and only exports and measures again.

    Returns:
        The card written.
    """
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ood_sets import write_corrupted, write_other_modalities

    from s3f_edge.train.calibrate import calibrate_file

    card = json.loads((out_dir / "card.json").read_text())
    options = card["training"]["options"]
    brain = data_root / "brain_tumor_mri"
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        stage = scratch / "bundle"
        stage.mkdir()
        if refit:
            calibration = calibrate_file(out_dir / "model.keras", brain, stage / "model.keras",
                                         val_fraction=options["val_fraction"], seed=options["seed"])
            calibration.pop("out")
        else:
            shutil.copy2(out_dir / "model.keras", stage / "model.keras")
            calibration = (read_metadata(stage / "model.keras") or {}).get("calibration")
            if not calibration:
                raise SystemExit("the bundled model.keras is not calibrated: run --calibrate instead of --reexport")
        exports = {}
        for precision in ("fp32", "fp16", "int8"):
            exports[precision] = export_model(stage / "model.keras", ExportOptions(
                out_dir=scratch / f"export-{precision}", precision=precision, calib=brain / "train",
                data=brain)).rows[-1]["file"]
        shutil.copy2(exports["fp32"], stage / "model.onnx")
        write_other_modalities(scratch / "other-modalities", crops=24)
        write_corrupted(brain / "test", scratch / "corrupted")
        ood_folders = [data_root / "busi" / "test", scratch / "other-modalities",
                       *sorted((scratch / "corrupted").iterdir())]
        scores, refusal, sets = {}, {}, {}
        files = {"model.keras": stage / "model.keras", "model.onnx": stage / "model.onnx",
                 "model.fp16.onnx": Path(exports["fp16"]), "model.int8.onnx": Path(exports["int8"])}
        for name, path in files.items():
            started = time.perf_counter()
            official = evaluate_folder(path, brain / "test", scratch / f"eval-{name}", ood_folders=ood_folders)
            sets[name] = {key: official["sets"][key] for key in ("coverage", "coverage_interval", "mean_size",
                                                                  "single", "empty")} if "sets" in official else None
            refusal[name] = {"brain MRI test": {key: official["ood"][key] for key in ("refused", "accuracy_accepted")},
                             **{_set_name(Path(folder)): values
                                for folder, values in official["ood"]["folders"].items()}}
            if name in ("model.keras", "model.onnx"):
                dedup = evaluate_folder(path, brain / "test", scratch / f"dedup-{name}", exclude=DUPLICATES)
                scores[name] = {"official_test": summary(official), "deduplicated_test": summary(dedup),
                                "excluded_duplicates": dedup["excluded_files"],
                                "seconds": round(time.perf_counter() - started, 1)}
        test = calibration_test_report(stage / "model.keras", calibration, brain / "test")
        card["evaluation"] = scores
        card["measured"] = {"command": "--calibrate" if refit else "--reexport", "date": time.strftime("%Y-%m-%d")}
        card["calibration"] = {**calibration, "ece_test": {"before": test["ece_before"], "after": test["ece_after"]},
                               "test": test, "refusal": refusal, "sets_test": sets,
                               "score_shift": score_shift(files, brain / "test", calibration["ood"]["threshold"])}
        card["files"] = {name: {"bytes": (stage / name).stat().st_size, "sha256": file_sha256(stage / name)}
                         for name in ("model.keras", "model.onnx")}
        card["total_bytes"] = sum(f["bytes"] for f in card["files"].values())
        if card["total_bytes"] > MAX_BYTES:
            raise SystemExit(f"bundle is {card['total_bytes'] / 2**20:.1f} MB, over the 20 MB limit")
        (stage / "card.json").write_text(json.dumps(card, indent=2))
        (stage / "MODEL_CARD.md").write_text(render_card(card))
        for new in stage.iterdir():
            shutil.copy2(new, out_dir / new.name)
    return card


def _set_name(folder: Path) -> str:
    names = {"test": "BUSI test (ultrasound)", "other-modalities": "other modalities",
             "noise": "brain MRI, noise", "blur": "brain MRI, blur", "low-contrast": "brain MRI, low contrast"}
    return names.get(folder.name, folder.name)


def score_shift(files: dict[str, Path], test_dir: Path, threshold: float) -> dict:
    """How far the FP16 and INT8 files move the score from model.onnx's on the test set, and which decisions flip."""
    import numpy as np

    from s3f_edge.data.folders import discover, load_split
    from s3f_edge.runtime import load_predictor

    reference = load_predictor(files["model.onnx"])
    images, _, _ = load_split(discover(test_dir).train, reference.contract)
    _, expected = reference.predict_all_scored(images)
    shifts = {}
    for name in ("model.fp16.onnx", "model.int8.onnx"):
        _, got = load_predictor(files[name]).predict_all_scored(images)
        difference = np.abs(got - expected)
        flipped = (got > threshold) != (expected > threshold)
        shifts[name] = {"p99": float(np.percentile(difference, 99)), "max": float(difference.max()),
                        "flipped": int(flipped.sum()), "images": int(len(images)),
                        "flipped_farthest_from_threshold": float(np.abs(expected[flipped] - threshold).max())
                        if flipped.any() else None}
    return shifts


def calibration_test_report(model_path: Path, calibration: dict, test_dir: Path) -> dict:
    """ECE at T = 1 and at the fitted T, and the refused images' errors, on the test set (from the calibrated
    model's logits: the same whether or not the bundle was calibrated before)."""
    from s3f_edge.data.folders import discover, load_split
    from s3f_edge.data.preprocess import Preprocessing
    from s3f_edge.train.calibrate import calibration_report

    split = discover(test_dir).train  # DATA/<class>/... : the folder's images are its "train" split
    images, labels, _ = load_split(split, Preprocessing.from_dict(read_metadata(model_path)["preprocessing"]))
    return calibration_report(load_model(model_path), calibration, images, labels)


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
Generated by `tools/bundle_default_model.py` on {card['created']}; every number below was
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

Reproduce: `s3f-edge evaluate s3f_edge/assets/default_model/model.keras BRAIN_MRI/test --out runs/default-model`,
where BRAIN_MRI is the dataset named above
(add `--exclude docs/brain_mri_test_duplicates.txt` for the de-duplicated set).

## Files
| File | Bytes | sha256 |
|---|---|---|
""" + "\n".join(f"| {name} | {f['bytes']:,} | `{f['sha256']}` |" for name, f in card["files"].items()) + """

""" + render_calibration(card) + """
## Limitations
- One seed, one short CPU training; accuracy varies between runs (see `docs/reproduction.md`).
- The dataset mixes three public sources with uneven acquisition; images were resized to 224×224
  JPEG by the dataset's uploader before our own resize.
- Refusal is measured on the image kinds listed above only; an image unlike all of them may still be
  accepted. The probabilities are calibrated on this dataset's validation split, not on any clinical
  population.
"""


def render_calibration(card: dict) -> str:
    """The card's calibration section (empty for a bundle that was not calibrated)."""
    calibration = card.get("calibration")
    if not calibration:
        return ("## Calibration\nNot calibrated: the probabilities are not calibrated risks, and the model cannot "
                "refuse.\n")
    fitted, ood = calibration["fitted_on"], calibration["ood"]
    return f"""
## Calibration and refusal (fitted on the training and validation images only)
- Temperature {calibration['temperature']:.3f}, fitted on the {fitted['validation_images']} validation images
  (log-likelihood): expected calibration error (15 bins) {calibration['ece_validation']['before']:.4f} ->
  {calibration['ece_validation']['after']:.4f} on validation, {calibration['ece_test']['before']:.4f} ->
  {calibration['ece_test']['after']:.4f} on the official test set. The predicted classes do not change.
- Out-of-distribution score `{ood['method']}`: the Mahalanobis distance of each of the {len(ood['blocks'])}
  spatial blocks' output, summarised per channel by its mean and spread, to the nearest class mean
  ({fitted['training_images']} training images), standardised on validation; the largest of them. \
`s3f-edge infer` refuses an image scoring over
  {ood['threshold']:.3f}, the threshold that accepts {ood['keep']:.0%} of the validation images. No image of
  another kind was used to fit it; those below only measure it.
- Each file has its own temperature, threshold and prediction-set threshold, fitted by `s3f-edge export --data`
  on its own outputs over the same validation images.
{sets_table(card)}
{refusal_table(card)}"""


def sets_table(card: dict) -> str:
    """How each file's 95 % prediction sets did on the official test set (the images it accepts)."""
    sets = card["calibration"].get("sets_test") or {}
    if not any(sets.values()):
        return ""
    rows = [f"| {name} | {s['coverage']:.1%} ({s['coverage_interval'][0]:.1%}-{s['coverage_interval'][1]:.1%}) | "
            f"{s['mean_size']:.3f} | {s['single']:.1%} | {s['empty']:.1%} |" for name, s in sets.items() if s]
    return ("\nPrediction sets at 95 % coverage on the official test set (`infer` writes them as `answer_set`; an "
            "empty set means no class is plausible):\n\n| File | Coverage (95 % interval) | Mean set size | "
            "Single class | Empty |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def refusal_table(card: dict) -> str:
    """Refusal and accuracy per file of the bundle (and its FP16/INT8 exports), per set of images."""
    refusal = card["calibration"]["refusal"]
    sets = [name for name in refusal["model.keras"] if name != "brain MRI test"]
    header = ["File", "Brain MRI test refused", "Accuracy on accepted (all: "
              f"{_pct(card['evaluation']['model.keras']['official_test']['accuracy'])})",
              *[f"{name}: refused / AUROC" for name in sets]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in refusal.items():
        test = values["brain MRI test"]
        cells = [name, _pct(test["refused"]), _pct(test["accuracy_accepted"])]
        cells += [f"{_pct(values[s]['refused'])} / {values[s]['auroc']:.4f}" for s in sets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + """

Other modalities: crops of retinal fundus, histology, microscopy and CT-phantom images (scikit-image), CT and
ultrasound DICOM files (pydicom's test data), photographs and documents (`benchmarks/ood_sets.py`). Corrupted
brain MRI (noise, blur, low contrast) is still brain MRI: its refusal is reported, not a goal.
"""


def summary_table(card: dict) -> str:
    """The card as the README's summary: accuracy of each bundled file on the official and de-duplicated tests."""
    training, evaluation = card["training"], card["evaluation"]
    lines = ["| File | Validation acc | Official test acc (images) | De-duplicated test acc (images) | Macro-F1 | κ |",
             "|---|---|---|---|---|---|"]
    for name in ("model.keras", "model.onnx"):
        official, dedup = evaluation[name]["official_test"], evaluation[name]["deduplicated_test"]
        lines.append(f"| {name} | {training['validation']['accuracy']:.2%} | {official['accuracy']:.2%} "
                     f"({official['count']:,}) | {dedup['accuracy']:.2%} ({dedup['count']:,}) | "
                     f"{official['f1_macro']:.3f} | {official['cohen_kappa']:.3f} |")
    options = training["options"]
    return "\n".join(lines) + (
        f"\n\n{card['name']}, {options['epochs']} epochs (best: {training['best_epoch']}), seed {options['seed']}, "
        f"trained over {training['train_seconds'] / 60:.0f} min of wall-clock time on a 2-core CPU (pauses included); "
        f"both files {card['total_bytes'] / 1e6:.1f} MB together; bundled {card['created']}.\n")


def write_summaries(card: dict) -> None:
    """docs/generated/: the summary table, and the refusal table of a calibrated bundle."""
    (ROOT / "docs" / "generated" / "bundled_model.md").write_text(summary_table(card))
    if card.get("calibration"):
        write_refusal_summary(card)


def write_refusal_summary(card: dict) -> None:
    """docs/generated/bundled_refusal.md: the refusal table and the temperature's effect, for the docs."""
    calibration = card["calibration"]
    # Cards written before "measured" was recorded were measured when calibrated.
    measured = card.get("measured") or {"command": "--calibrate", "date": calibration["fitted"]}
    ece_v, ece_t = calibration["ece_validation"], calibration["ece_test"]
    test = calibration["test"]
    refused = round(test["refused"] * test["count"])
    text = (refusal_table(card) + f"\nOf the {refused} brain MRI test images refused (model.keras), "
            f"{test['errors_refused']} {'was' if test['errors_refused'] == 1 else 'were'} misclassified; accuracy on "
            f"all {test['count']:,}: {_pct(test['accuracy'])}, on the accepted ones: "
            f"{_pct(test['accuracy_accepted'])}.\n"
            + "".join(f"\n{name} moves the score from model.onnx's by {shift['p99']:.3f} at the 99th percentile "
                      f"(at most {shift['max']:.3f}) over the {shift['images']:,} test images; decisions flipped "
                      f"at model.onnx's threshold (had it been copied; each file refuses by its own, above): "
                      f"{shift['flipped']}"
                      + (f", all within {shift['flipped_farthest_from_threshold']:.2f} of the threshold."
                         if shift["flipped"] else ".") for name, shift in calibration["score_shift"].items())
            + f"\n\nTemperature {calibration['temperature']:.3f}: expected calibration error "
            f"(15 bins) {ece_v['before']:.4f} -> {ece_v['after']:.4f} on validation, {ece_t['before']:.4f} -> "
            f"{ece_t['after']:.4f} on the official test set ({test['count']:,} images). "
            f"Threshold {calibration['ood']['threshold']:.3f} "
            f"(accepts {calibration['ood']['keep']:.0%} of the validation split), fitted on {calibration['fitted']}. "
            f"Measured by `tools/bundle_default_model.py {measured['command']}` on {measured['date']}.\n")
    (ROOT / "docs" / "generated" / "bundled_refusal.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite MODEL_CARD.md from the bundled card.json (no training run needed)")
    parser.add_argument("--data", type=Path, help="the brain MRI dataset; default: $S3F_EDGE_DATA/brain_tumor_mri")
    parser.add_argument("--calibrate", action="store_true",
                        help="calibrate the bundled model in place (data: the parent of --data, which also holds busi)")
    parser.add_argument("--reexport", action="store_true",
                        help="export the bundled, calibrated model.keras again as it is (no training, no refitting) "
                             "and re-measure every number of the card (data: as --calibrate)")
    args = parser.parse_args()
    if args.calibrate or args.reexport:
        args.data = args.data or require_data("brain_tumor_mri", "--data")
        card = calibrate_bundle(args.data.parent, refit=args.calibrate)
        write_summaries(card)
        print(f"{'calibrated' if args.calibrate else 're-exported'} {card['name']}: threshold "
              f"{card['calibration']['ood']['threshold']:.3f}, temperature {card['calibration']['temperature']:.3f}, "
              f"model.onnx sha256 {card['files']['model.onnx']['sha256']}")
        return
    if args.render_only:
        card = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
        (DEFAULT_MODEL_DIR / "MODEL_CARD.md").write_text(render_card(card))
        write_summaries(card)
        return
    if args.run_dir is None:
        parser.error("give the run directory to bundle (or --render-only)")
    card = bundle(args.run_dir, args.data or require_data("brain_tumor_mri", "--data"))
    write_summaries(card)
    official = card["evaluation"]["model.keras"]["official_test"]["accuracy"]
    print(f"bundled {card['name']}: {card['total_bytes'] / 2**20:.1f} MB, official test accuracy {_pct(official)}")


if __name__ == "__main__":
    main()
