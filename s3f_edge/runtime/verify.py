"""`s3f-edge verify`: every deployed backend against the Keras model, on the same real images."""
from __future__ import annotations

from pathlib import Path

from s3f_edge.errors import InputError
from s3f_edge.runtime.parity import compare_outputs, parity_failures, real_batch
from s3f_edge.contract import OOD_SCORE, PROBS
from s3f_edge.runtime.predictor import Predictor


def verify_backends(keras_path: str | Path, deployed: list[str | Path], images: str | Path | None,
                    limit: int = 256, providers: list[str] | None = None) -> list[dict]:
    """One entry per deployed model: backend, provider, precision, parity numbers and failures.

    The reference is a .keras file, so this needs the training stack (TensorFlow).
    """
    if Path(keras_path).suffix.lower() != ".keras":
        raise InputError(f"the reference must be the .keras model the files were exported from, got {keras_path}")
    reference = Predictor.load(keras_path)
    batch = real_batch(reference.contract, images, limit)
    expected = _outputs(*reference.predict_all_scored(batch))
    report = []
    for path in deployed:
        candidate = Predictor.load(path, providers=providers)
        if candidate.contract != reference.contract or candidate.class_names != reference.class_names:
            raise InputError(f"{path} was not exported from {keras_path}: classes or preprocessing differ")
        precision = candidate.metadata.get("precision", "fp32")
        result = compare_outputs(expected, _outputs(*candidate.predict_all_scored(batch)), "real images",
                                 threshold=reference.ood_threshold)
        report.append({"model": str(path), "backend": candidate.backend, "provider": candidate.provider,
                       "precision": precision, **result.to_dict(), "failures": parity_failures([result], precision)})
    return report


def _outputs(probabilities, scores) -> dict:
    return {PROBS: probabilities, **({OOD_SCORE: scores} if scores is not None else {})}
