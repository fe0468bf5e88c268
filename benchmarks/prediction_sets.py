"""Each file's own guarantees, measured: a model (the bundled one by default) exported to FP32, FP16 and INT8 ONNX
with ``--data`` (every file fitted on its own outputs over the model's validation images), then scored on its
dataset's test set: the share each refuses with its own threshold (and with the FP32 threshold copied, as
before), and how its 95 % prediction sets cover, also on degraded test images. Also the choice of the set's
score: LAC (adopted) against MAPIE's APS on the same probabilities.

    S3F_EDGE_DATA=/path/to/data python benchmarks/prediction_sets.py [--model MODEL.keras --dataset busi]

Writes benchmarks/results/prediction_sets.md (prediction_sets_busi.md for --dataset busi; docs/calibration.md
shows them).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s3f_edge.testing import require_data  # noqa: E402

BUNDLED = ROOT / "s3f_edge" / "assets" / "default_model" / "model.keras"
RESULTS = ROOT / "benchmarks" / "results"


def test_outputs(predictor, test_dir: Path):
    from s3f_edge.data.folders import discover, load_split

    images, labels, _ = load_split(discover(test_dir).train, predictor.contract)
    probabilities, scores = predictor.predict_all_scored(images)
    return probabilities, scores, labels


def aps_sets(calibration_p, calibration_y, test_p, coverage: float) -> np.ndarray:
    """MAPIE's APS sets for prefit probabilities: its calibration scores are randomised (seeded here), the class
    that crosses the threshold is included."""
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    table = np.concatenate([calibration_p, test_p])

    class Table(ClassifierMixin, BaseEstimator):
        def fit(self, features, labels):
            self.classes_, self.n_features_in_ = np.arange(table.shape[1]), 1
            return self

        def predict_proba(self, features):
            return table[np.asarray(features)[:, 0].astype(int)]

        def predict(self, features):
            return self.predict_proba(features).argmax(axis=1)

    index = np.arange(len(table))[:, None]
    model = SplitConformalClassifier(estimator=Table().fit(None, None), confidence_level=coverage,
                                     conformity_score="aps", prefit=True, random_state=0)
    model.conformalize(index[:len(calibration_p)], calibration_y)
    return model.predict_set(index[len(calibration_p):])[1][:, :, 0]


def agreement(calibration: dict) -> str:
    """A file's agreement with the Keras FP32 model on the validation images, as export measured it."""
    found = calibration.get("agreement_with_fp32")
    return "-" if found is None else f"{found['top1']:.1%} / {found['refusal']:.1%} / {found['sets']:.1%}"


def shifted_coverage(predictor, test_dir: Path, scratch: Path) -> list[str]:
    """The FP32 file's 95 % sets on brain MRI test images degraded (benchmarks/ood_sets.py: blur, noise, low
    contrast), those its refusal lets through: the coverage promised for images like the validation images,
    measured on images collected worse."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ood_sets import write_corrupted

    from s3f_edge.data.files import image_files
    from s3f_edge.data.folders import Split, load_split
    from s3f_edge.runtime.calibration import prediction_sets
    from s3f_edge.train.metrics import set_metrics

    write_corrupted(test_dir, scratch)
    rows = []
    method, threshold, _ = predictor.set_rule
    for folder in sorted(p for p in scratch.iterdir() if p.is_dir()):
        files = image_files(folder)
        labels = np.array([predictor.class_names.index(path.name.split("_")[0]) for path in files])
        images, labels, _ = load_split(Split(files, labels), predictor.contract)
        probabilities, scores = predictor.predict_all_scored(images)
        accepted = scores <= predictor.ood_threshold
        if not accepted.any():
            rows.append(f"| {folder.name} | {len(files)} | 0 | - | - |")
            continue
        found = set_metrics(prediction_sets(probabilities[accepted], threshold, method), labels[accepted],
                            predictor.class_names)
        low, high = found["coverage_interval"]
        rows.append(f"| {folder.name} | {len(files)} | {accepted.sum()} | {found['coverage']:.1%} ({low:.1%}-"
                    f"{high:.1%}) | {found['mean_size']:.3f} |")
    return ["| Test images, degraded (FP32) | Images | Accepted | 95 % set coverage of the accepted "
            "(95 % interval) | Mean set size |", "|---|---|---|---|---|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED)
    parser.add_argument("--dataset", default="brain_tumor_mri",
                        help="the model's dataset under $S3F_EDGE_DATA (brain_tumor_mri or busi)")
    args = parser.parse_args()
    data = require_data(args.dataset)
    from s3f_edge.errors import ParityError
    from s3f_edge.export.guarantees import validation_images
    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.runtime import load_predictor
    from s3f_edge.runtime.calibration import prediction_sets
    from s3f_edge.train.metrics import set_metrics

    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        files, refused = {}, {}
        for precision in ("fp16", "int8"):
            started = time.perf_counter()
            # Parity on the dataset's own images (the shipped parity images are brain MRI).
            parity = None if args.dataset == "brain_tumor_mri" else data / "train"
            try:
                result = export_model(args.model, ExportOptions(out_dir=Path(scratch) / precision,
                                                                precision=precision, calib=data / "train", data=data,
                                                                parity_images=parity))
            except ParityError as error:  # export refused the file: a result of its own
                refused[precision] = str(error).split("; the file was kept")[0]
                continue
            finally:
                files["fp32"] = Path(scratch) / "fp16" / "model.onnx"
            files[precision] = Path(result.rows[-1]["file"])
            print(f"exported {precision} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        fp32 = load_predictor(files["fp32"])
        rows = [f"| {name} | refused by export: {reason} | | | | | | | | |" for name, reason in refused.items()]
        for name, path in files.items():
            predictor = load_predictor(path)
            probabilities, scores, labels = test_outputs(predictor, data / "test")
            accepted = scores <= predictor.ood_threshold
            method, threshold, coverage = predictor.set_rule
            sets = set_metrics(prediction_sets(probabilities[accepted], threshold, method), labels[accepted],
                               predictor.class_names)
            copied = float((scores > fp32.ood_threshold).mean())
            low, high = sets["coverage_interval"]
            rows.append(f"| {name} | {predictor.calibration['temperature']:.3f} | {predictor.ood_threshold:.3f} | "
                        f"{(~accepted).mean():.2%} ({(~accepted).sum()}) | {copied:.2%} | {sets['coverage']:.1%} "
                        f"({low:.1%}-{high:.1%}) | {sets['mean_size']:.3f} | {sets['single']:.1%} | "
                        f"{sets['empty']:.1%} | {agreement(predictor.calibration)} |")
        lines += ["| File | Temperature | Refusal threshold | Test refused, own threshold | Test refused, FP32's "
                  "threshold | 95 % set coverage (95 % interval) | Mean set size | Single class | Empty | Same "
                  "top-1 / refusal / set as FP32 (validation) |",
                  "|---|---|---|---|---|---|---|---|---|---|", *rows]
        # The score's choice, on the FP32 file: LAC against APS, calibrated on the same validation images.
        images, labels = validation_images(fp32.calibration, data, fp32.contract)
        validation_p = fp32.predict_all_scored(images)[0]
        accepted_v = ~fp32.refuses(fp32.predict_all_scored(images)[1])
        probabilities, scores, test_y = test_outputs(fp32, data / "test")
        accepted = scores <= fp32.ood_threshold
        method, threshold, _ = fp32.set_rule
        lac = set_metrics(prediction_sets(probabilities[accepted], threshold, method), test_y[accepted],
                          fp32.class_names)
        aps = set_metrics(aps_sets(validation_p[accepted_v], labels[accepted_v], probabilities[accepted], 0.95),
                          test_y[accepted], fp32.class_names)
        lines += ["", "| Set score (FP32, 95 %) | Coverage | Mean size | Single class | Empty |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label} | {m['coverage']:.1%} | {m['mean_size']:.3f} | {m['single']:.1%} | {m['empty']:.1%} |"
                  for label, m in (("LAC (adopted)", lac), ("APS (MAPIE's, seeded, last class included)", aps))]
        lines += ["", *shifted_coverage(fp32, data / "test", Path(scratch) / "corrupted")]
    lines += ["", f"Measured by `benchmarks/prediction_sets.py` on {time.strftime('%Y-%m-%d')}: "
              f"{'the bundled model' if args.model == BUNDLED else args.model.parent.name + '/' + args.model.name}, "
              f"calibration on its {len(labels)} validation images, {args.dataset} test set ({len(test_y)} images)."]
    name = "prediction_sets" if args.dataset == "brain_tumor_mri" else f"prediction_sets_{args.dataset}"
    out = RESULTS / f"{name}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
