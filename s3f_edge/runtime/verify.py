"""`s3f-edge verify`: every deployed backend against the Keras model, on the same real images."""
from __future__ import annotations

from pathlib import Path

from s3f_edge.contract import OOD_SCORE, PROBS
from s3f_edge.errors import InputError
from s3f_edge.runtime.formats import load_predictor
from s3f_edge.runtime.parity import compare_outputs, parity_failures, real_batch


def verify_backends(keras_path: str | Path, deployed: list[str | Path], images: str | Path | None,
                    limit: int = 256, providers: list[str] | None = None) -> list[dict]:
    """One entry per deployed model: backend, provider, precision, parity numbers and failures.

    The reference is a .keras file, so this needs the training stack (TensorFlow). Errors of ``load_predictor``
    (a missing file, a backend unavailable here) pass through.

    Args:
        keras_path: the .keras model the files were exported from (the reference).
        deployed: the exported files (.onnx, TensorRT engines), each run on its format's default backend.
        images: a folder of real images to compare on; None: the packaged parity images.
        limit: use at most this many images (the first in path order; unreadable ones are skipped).
        providers: ONNX Runtime execution providers for the .onnx files; None: the best available here.

    Returns:
        Per deployed file: model, backend, provider, precision, the ``ParityResult`` fields and ``failures``
        (``parity_failures`` for its precision; empty when it passes).

    Raises:
        InputError: the reference is not a .keras file, a file was not exported from it (other classes or
            preprocessing), or no image is readable.
    """
    if Path(keras_path).suffix.lower() != ".keras":
        raise InputError(f"the reference must be the .keras model the files were exported from, got {keras_path}")
    reference = load_predictor(keras_path)
    batch = real_batch(reference.contract, images, limit)
    expected = _outputs(*reference.predict_all_scored(batch))
    report = []
    for path in deployed:
        candidate = load_predictor(path, providers=providers)
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
