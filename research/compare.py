"""How sure is a difference in test accuracy between two models scored on the same images?

    python research/compare.py MODEL_A.keras MODEL_B.keras TEST_DIR [--exclude FILE]

Prints both accuracies, the difference with a paired bootstrap 95 % interval (images resampled,
both models kept paired) and the exact McNemar test on the images where the two models disagree.
With one training seed per model this measures test-set sampling noise only, not seed-to-seed
training noise, which on this data is larger (see docs/reproduction.md).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s3f_edge.data.folders import Split, load_split  # noqa: E402
from s3f_edge.runtime.formats import load_predictor
from s3f_edge.train.evaluate import labelled_split  # noqa: E402


@functools.cache  # table.py pairs one run with several others: score each model once per test set
def correct_per_image(model: Path, test_dir: Path, exclude: Path | None) -> np.ndarray:
    _, split, _ = labelled_split(test_dir, exclude)
    correct = correct_on(model, split)
    correct.setflags(write=False)  # one cached array serves every caller: none may change it
    return correct


def correct_on(model: Path, split: Split) -> np.ndarray:
    """Whether ``model`` classifies each image of ``split`` right (finite outputs checked first)."""
    predictor = load_predictor(model)
    images, labels, failures = load_split(split, predictor.contract)
    if failures:
        raise SystemExit(f"{len(failures)} images could not be read; compare on readable sets only")
    probabilities = predictor.predict_all(images)
    if not np.isfinite(probabilities).all():
        raise SystemExit(f"{model} gave non-finite outputs")
    return probabilities.argmax(1) == labels


def compare(a: np.ndarray, b: np.ndarray, rounds: int = 10000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(rounds, len(a)))
    differences = a[picks].mean(1) - b[picks].mean(1)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    mcnemar = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"images": int(len(a)), "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()),
            "difference": float(a.mean() - b.mean()),
            "difference_95ci": [float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))],
            "only_a_right": only_a, "only_b_right": only_b, "mcnemar_exact_p": float(mcnemar)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_a", type=Path)
    parser.add_argument("model_b", type=Path)
    parser.add_argument("test_dir", type=Path)
    parser.add_argument("--exclude", type=Path, default=None)
    args = parser.parse_args()
    result = compare(correct_per_image(args.model_a, args.test_dir, args.exclude),
                     correct_per_image(args.model_b, args.test_dir, args.exclude))
    print(json.dumps({"a": str(args.model_a), "b": str(args.model_b), **result}, indent=2))


if __name__ == "__main__":
    main()
