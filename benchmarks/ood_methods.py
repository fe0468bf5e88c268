"""Which out-of-distribution score to adopt: five candidates on the bundled brain MRI model, one table.

Every score is fitted on the model's own images only: class statistics on its training images (the split it
was trained with), standardisation and threshold on its validation split (the threshold accepts 99 % of it).
Then each is measured, never fitted, on: the brain MRI test set (refused: should be low), breast ultrasound
(BUSI's train split only: its test split is kept for the final measurement of the score chosen here, on the
bundled model's card), other modalities and photographs (benchmarks/ood_sets.py), and corrupted brain MRI
(report only). Candidates: maximum softmax probability, energy, Mahalanobis and k-nearest-neighbour distance
on the penultimate features (the literature's defaults); Mahalanobis on every convolutional block of both
towers, each summarised by its mean; and on the spatial tower's blocks, each summarised by its mean and
spread (s3f_edge.train.ood.block_scores, as s3f_edge.train.calibrate fits it).

    .venv/bin/python benchmarks/ood_methods.py --out benchmarks/results [--data $S3F_EDGE_DATA]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ood_sets import write_corrupted, write_other_modalities  # noqa: E402
from results_files import write_results  # noqa: E402  (benchmarks/ is the script's folder)

from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR  # noqa: E402
from s3f_edge.testing import require_data  # noqa: E402

KEEP = 0.99
CANDIDATES = ("msp", "energy", "mahalanobis", "knn", "every-block-mean", "mahalanobis-blocks",
              "mahalanobis-blocks-quantile")
NAMES = {"msp": "max softmax probability", "energy": "energy", "mahalanobis": "Mahalanobis, penultimate",
         "knn": "kNN (k=10), penultimate", "every-block-mean": "Mahalanobis, every block's mean",
         "mahalanobis-blocks": "Mahalanobis, spatial blocks' mean and spread (adopted)",
         "mahalanobis-blocks-quantile": "the same, each block scaled by its validation median and 99th percentile"}


def features(model, images: np.ndarray, batch_size: int = 128) -> dict:
    """The uncalibrated model's features for every candidate: block summaries of both kinds, penultimate
    features, logits."""
    import keras

    from s3f_edge.model.calibration import block_layers, head
    from s3f_edge.model.forward import batched_outputs
    from s3f_edge.train.calibrate import block_features

    every = [layer.name for layer in block_layers(model, spectral=True)]
    adopted, logits = block_features(model, images, batch_size)
    every_mean, _ = block_features(model, images, batch_size, blocks=every, pooling="mean")
    penultimate = batched_outputs(keras.Model(model.inputs, head(model).input), images, batch_size)[0]
    return {"mahalanobis-blocks": adopted, "every-block-mean": every_mean,
            "penultimate": penultimate.astype(np.float64), "logits": logits}


def folder_images(folder: Path, contract) -> np.ndarray:
    from s3f_edge.data.files import image_files
    from s3f_edge.data.folders import Split, load_split

    files = image_files(folder)
    images, _, _ = load_split(Split(files, np.zeros(len(files), np.int64)), contract)
    return images


def measure(data: Path, scratch: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    from s3f_edge.data.folders import discover, load_split, stratified_split
    from s3f_edge.data.preprocess import Preprocessing
    from s3f_edge.model import load_model
    from s3f_edge.model.calibration import uncalibrated
    from s3f_edge.model.metadata import read_metadata
    from s3f_edge.train.calibrate import DEFAULT_FIT_IMAGES, calibration_sample
    from s3f_edge.train.ood import block_scores, fit_blocks, fit_score, score, threshold_keeping

    card = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
    options = card["training"]["options"]
    model = uncalibrated(load_model(DEFAULT_MODEL_DIR / "model.keras"))
    contract = Preprocessing.from_dict(read_metadata(DEFAULT_MODEL_DIR / "model.keras")["preprocessing"])
    brain = discover(data / "brain_tumor_mri")
    fit, validation = stratified_split(brain.train, options["val_fraction"], options["seed"])
    fit = fit.subset(calibration_sample(fit.labels, DEFAULT_FIT_IMAGES, options["seed"]))
    sets = {"fit": load_split(fit, contract)[:2], "validation": load_split(validation, contract)[:2],
            "brain MRI test": load_split(brain.test, contract)[:2]}
    write_other_modalities(scratch / "other", crops=24)
    write_corrupted(data / "brain_tumor_mri" / "test", scratch / "corrupted")
    others = {"BUSI train (ultrasound)": folder_images(data / "busi" / "train", contract),
              "other modalities": folder_images(scratch / "other", contract),
              **{f"brain MRI, {kind}": folder_images(scratch / "corrupted" / kind, contract)
                 for kind in sorted(p.name for p in (scratch / "corrupted").iterdir())}}
    extracted = {name: features(model, images) for name, (images, _) in sets.items()}
    extracted.update({name: features(model, images) for name, images in others.items()})
    fit_labels = sets["fit"][1]
    test_labels = sets["brain MRI test"][1]
    rows = []
    for method in CANDIDATES:
        if method.startswith("mahalanobis-blocks") or method == "every-block-mean":
            kind = "every-block-mean" if method == "every-block-mean" else "mahalanobis-blocks"
            statistics = fit_blocks(extracted["fit"][kind], fit_labels, extracted["validation"][kind],
                                    normalisation="quantile" if method.endswith("quantile") else "mean_std")
            scores = {name: block_scores(statistics, found[kind]) for name, found in extracted.items()}
        else:
            fitted = fit_score(method, extracted["fit"]["penultimate"], fit_labels)
            scores = {name: score(fitted, found["penultimate"], found["logits"]) for name, found in extracted.items()}
        threshold = threshold_keeping(scores["validation"], KEEP)
        in_scores = scores["brain MRI test"]
        predicted = extracted["brain MRI test"]["logits"].argmax(axis=1)
        accepted = in_scores <= threshold
        row = {"method": method, "threshold": threshold,
               "brain MRI test": {"images": int(len(in_scores)), "refused": float(1 - accepted.mean()),
                                  "accuracy": float((predicted == test_labels).mean()),
                                  "accuracy_accepted": float((predicted == test_labels)[accepted].mean())}}
        for name in others:
            truth = np.r_[np.zeros(len(in_scores)), np.ones(len(scores[name]))]
            row[name] = {"images": int(len(scores[name])), "refused": float((scores[name] > threshold).mean()),
                         "auroc": float(roc_auc_score(truth, np.r_[in_scores, scores[name]]))}
        rows.append(row)
    return {"model": card["name"], "date": time.strftime("%Y-%m-%d"), "keep": KEEP,
            "fit_images": int(len(fit_labels)), "validation_images": int(len(sets["validation"][1])),
            "test_images": int(len(test_labels)),
            "sets": {name: int(len(images)) for name, images in others.items()}, "rows": rows}


def markdown(result: dict) -> str:
    others = list(result["sets"])
    header = ["Score", "Brain MRI test refused", "Accuracy: all → accepted"]
    header += [f"{name}: refused / AUROC" for name in others]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        test = row["brain MRI test"]
        cells = [NAMES[row["method"]], f"{test['refused']:.1%}",
                 f"{test['accuracy']:.2%} → {test['accuracy_accepted']:.2%}"]
        cells += [f"{row[name]['refused']:.1%} / {row[name]['auroc']:.4f}" for name in others]
        lines.append("| " + " | ".join(cells) + " |")
    sizes = ", ".join(f"{name} {count}" for name, count in result["sets"].items())
    return ("\n".join(lines) + f"\n\n{result['model']}; every score fitted on {result['fit_images']} of its training "
            f"images and {result['validation_images']} validation images, threshold accepting "
            f"{result['keep']:.0%} of validation; measured on the brain MRI test set ({result['test_images']:,}) and, "
            "never fitted on: "
            f"{sizes} images ({result['date']}).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--data", type=Path,
                        help="the folder holding brain_tumor_mri/ and busi/; default: $S3F_EDGE_DATA")
    args = parser.parse_args()
    args.data = args.data or require_data(option="--data")
    with tempfile.TemporaryDirectory(prefix="ood-sets-") as scratch:
        result = measure(args.data, Path(scratch))
    write_results(args.out, "ood_methods", result, markdown(result).rstrip("\n").split("\n"))


if __name__ == "__main__":
    main()
