"""Each exported file's own calibration: temperature, refusal threshold and prediction sets fitted on that file's
outputs over the validation images the model was calibrated on, and the file's agreement with the FP32 model.

A reduced-precision file moves the out-of-distribution score and the probabilities; a threshold or a set quantile
copied from the float model then no longer accepts what it promised. So export runs every file it writes over the
same validation images (carved from DATA as the model's calibration records: the same files, split and seed),
fits the three numbers on its outputs (``runtime.calibration.fit_calibration``), writes the temperature into the
file's graph and the rest into its metadata, and compares its decisions with the Keras FP32 model's: a file whose
agreement falls under ``AGREEMENT_LIMITS`` is refused, as parity refuses one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from s3f_edge.contract import OOD_SCORE, PROBS
from s3f_edge.data.preprocess import Preprocessing
from s3f_edge.errors import InputError, ParityError
from s3f_edge.runtime.calibration import (
    DEFAULT_COVERAGE,
    fit_calibration,
    logits_from_probabilities,
    prediction_sets,
    scaled_probabilities,
)

# The least share of the validation images on which a file must decide as the Keras FP32 model does: the same
# top-1 class (as parity asks of reduced precision), the same refusal decision, the same prediction set. The bundled
# model's FP16 and INT8 files pass them (INT8: 98.6 / 99.8 / 98.1 %, benchmarks/prediction_sets.py); a BUSI model's
# INT8 file, whose sets are larger and less certain, does not (sets: 90.4 %).
AGREEMENT_LIMITS = {"top1": 0.98, "refusal": 0.98, "sets": 0.95}


@dataclass
class Decisions:
    """What a file decides on the validation images with its calibration: top-1, refusals, sets."""

    top1: np.ndarray
    refused: np.ndarray
    sets: np.ndarray

    @classmethod
    def of(cls, probabilities: np.ndarray, scores: np.ndarray, calibration: dict) -> "Decisions":
        sets = calibration["sets"]
        return cls(probabilities.argmax(axis=1), scores > calibration["ood"]["threshold"],
                   prediction_sets(probabilities, sets["threshold"], sets["method"]))

    def agreement(self, reference: "Decisions") -> dict:
        """Shares of images decided as ``reference`` decides them (sets: on images both accept)."""
        both = ~self.refused & ~reference.refused
        same_sets = (self.sets[both] == reference.sets[both]).all(axis=1)
        return {"top1": float((self.top1 == reference.top1).mean()),
                "refusal": float((self.refused == reference.refused).mean()),
                "sets": float(same_sets.mean()) if both.any() else 1.0, "images": int(len(self.top1))}


def agreement_failures(agreement: dict) -> list[str]:
    """The agreements under ``AGREEMENT_LIMITS``, in words."""
    names = {"top1": "top-1 classes", "refusal": "refusal decisions", "sets": "prediction sets"}
    return [f"{names[key]} agree with FP32 on {agreement[key]:.1%} of the {agreement['images']} validation images "
            f"(limit {limit:.0%})" for key, limit in AGREEMENT_LIMITS.items() if agreement[key] < limit]


@dataclass
class ValidationImages:
    """The validation images the model was calibrated on, and the Keras model's outputs and decisions on them."""

    images: np.ndarray
    labels: np.ndarray
    calibration: dict  # the Keras model's, completed with sets when it had none
    reference: Decisions
    fitted: dict = field(default_factory=dict)  # file label -> {"calibration", "agreement"}


def validation_images(calibration: dict, data_dir: str | Path, contract: Preprocessing,
                      workers: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The validation images a calibration was fitted on, carved from ``data_dir`` as it records.

    Args:
        calibration: the model's ``calibration`` metadata (its ``fitted_on`` names the files' fingerprint, the
            split's fraction and seed).
        data_dir: the dataset the model was calibrated on.
        contract: the model's preprocessing.
        workers: decoding threads.

    Returns:
        (images, labels).

    Raises:
        InputError: the calibration does not record its split, or ``data_dir`` holds other files.
    """
    from s3f_edge.data.folders import discover, load_split, stratified_split

    fitted_on = calibration.get("fitted_on") or {}
    if not {"data_file_list_sha256", "val_fraction", "seed"} <= set(fitted_on):
        raise InputError("the model's calibration does not record the images it was fitted on; calibrate it again "
                         "with s3f-edge calibrate, then export")
    dataset = discover(data_dir)
    if dataset.file_list_hash() != fitted_on["data_file_list_sha256"]:
        raise InputError(f"--data {data_dir} does not hold the files the model was calibrated on; give that dataset "
                         "(the same files in train/ and test/)")
    _, validation = stratified_split(dataset.train, float(fitted_on["val_fraction"]), int(fitted_on["seed"]))
    images, labels, failed = load_split(validation, contract, workers)
    if failed:
        raise InputError(f"{len(failed)} validation image(s) could not be read, e.g. {failed[0][0]}: {failed[0][1]}")
    return images, labels


def prepare(calibration: dict, keras_outputs: dict, images: np.ndarray, labels: np.ndarray) -> ValidationImages:
    """The Keras FP32 model's decisions on the validation images, the reference every file is held to.

    The reference's threshold and sets are fitted again on the Keras graph's own outputs (at its temperature), as
    each file's are on its own: a threshold is an observed score, and the stored one was computed in float64
    outside the graph, so an image exactly at it could fall either side and count as a disagreement. A calibration
    that predates prediction sets gets the default coverage's."""
    probabilities = np.asarray(keras_outputs[PROBS], np.float64)
    scores = np.asarray(keras_outputs[OOD_SCORE], np.float64)
    stored = calibration.get("sets")
    levels = tuple(level["coverage"] for level in stored["levels"]) if stored else (DEFAULT_COVERAGE,)
    logits = logits_from_probabilities(probabilities, calibration["temperature"])
    fitted = fit_calibration(logits, labels, scores, keep=calibration["ood"]["keep"], coverages=levels,
                             temperature=calibration["temperature"], **({"method": stored["method"]} if stored else {}))
    reference = {**calibration, "ood": {**calibration["ood"], **fitted["ood"]}, "sets": fitted["sets"]}
    return ValidationImages(images, labels, {**calibration, "sets": stored or fitted["sets"]},
                            Decisions.of(probabilities, scores, reference))


def fit_file(validation: ValidationImages, label: str, outputs: dict, graph_temperature: float | None = None,
             fixed_temperature: bool = False) -> dict:
    """Fit a file's calibration on its outputs over the validation images and measure its agreement with FP32.

    Args:
        validation: the images and the reference (``prepare``).
        label: the file's name in messages and in ``validation.fitted`` (e.g. "int8").
        outputs: the file's outputs by name on ``validation.images``.
        graph_temperature: the temperature the file's graph holds (default: the Keras model's, which export
            wrote into it).
        fixed_temperature: keep that temperature (a TensorRT engine, whose graph cannot be edited) and fit the
            threshold and the sets alone.

    Returns:
        The file's ``calibration`` metadata (provenance kept, ``fitted_on.artefact`` = ``label``, ``agreement``).

    Raises:
        ParityError: an agreement under ``AGREEMENT_LIMITS``.
    """
    keras = validation.calibration
    probabilities = np.asarray(outputs[PROBS], np.float64)
    scores = np.asarray(outputs[OOD_SCORE], np.float64)
    held = keras["temperature"] if graph_temperature is None else graph_temperature
    logits = logits_from_probabilities(probabilities, held)
    fitted = fit_calibration(logits, validation.labels, scores, keep=keras["ood"]["keep"],
                             coverages=tuple(level["coverage"] for level in keras["sets"]["levels"]),
                             method=keras["sets"]["method"], temperature=held if fixed_temperature else None)
    calibration = {**keras, **fitted, "ood": {**keras["ood"], **fitted["ood"]},
                   "fitted_on": {**keras.get("fitted_on", {}), "artefact": label}}
    calibration.pop("temperature_note", None)
    if "temperature_note" in fitted:
        calibration["temperature_note"] = fitted["temperature_note"]
    mine = Decisions.of(scaled_probabilities(logits, calibration["temperature"]), scores, calibration)
    calibration["agreement_with_fp32"] = agreement = mine.agreement(validation.reference)
    failures = agreement_failures(agreement)
    if failures:
        raise ParityError(f"{label}: " + "; ".join(failures))
    validation.fitted[label] = calibration
    return calibration


def _probability_op(model: onnx.ModelProto) -> onnx.NodeProto:
    """The Softmax (or Sigmoid) that gives ``probs``, Casts and Identities after it skipped."""
    producers = {output: node for node in model.graph.node for output in node.output}
    node = producers.get(PROBS)
    while node is not None and node.op_type in ("Cast", "Identity"):
        node = producers.get(node.input[0])
    if node is None or node.op_type not in ("Softmax", "Sigmoid"):
        raise InputError("the exported graph's probs do not come from a Softmax or Sigmoid: its temperature cannot "
                         "be set")
    return node


def probability_node(model: onnx.ModelProto) -> tuple[onnx.TensorProto, bool] | None:
    """The initializer holding an ONNX file's temperature: the scalar that the logits are multiplied by (1 / T)
    or divided by (T) just before the Softmax (or Sigmoid) that gives ``probs`` (Casts and Identities skipped).

    Returns:
        (the initializer, whether it holds 1 / T), or None: the graph has none (a temperature of 1, which the
        converter folds away).

    Raises:
        InputError: ``probs`` does not come from a Softmax or Sigmoid (a graph s3f-edge did not write).
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    initializers = {init.name: init for init in model.graph.initializer}
    node = producers.get(_probability_op(model).input[0])
    while node is not None and node.op_type in ("Cast", "Identity"):
        node = producers.get(node.input[0])
    if node is not None and node.op_type in ("Mul", "Div"):
        scalar = [initializers[i] for i in node.input if i in initializers
                  and onnx.numpy_helper.to_array(initializers[i]).size == 1]
        if scalar and (node.op_type == "Mul" or node.input[1] == scalar[0].name):
            return scalar[0], node.op_type == "Mul"
    return None


def set_temperature(model: onnx.ModelProto, temperature: float, expected: float) -> None:
    """Write ``temperature`` into an ONNX file's graph (``probability_node``), in the initializer's own dtype; a
    graph without one (its temperature 1 folded away) gets a multiplication by 1 / T before its Softmax.

    Args:
        model: the ONNX model, changed in place.
        temperature: the file's fitted temperature.
        expected: the temperature the graph holds now (the Keras model's): a check that the right scalar is found.
    """
    found = probability_node(model)
    if found is None:
        if not np.isclose(expected, 1.0, rtol=1e-6):
            raise InputError(f"the exported graph has no temperature before its probs, but the model's is "
                             f"{expected:.4f}")
        if not np.isclose(temperature, 1.0, rtol=1e-9):  # 1 stays what it is: no multiplication
            _insert_temperature(model, temperature)
        return
    initializer, reciprocal = found
    current = onnx.numpy_helper.to_array(initializer)
    held = float(1 / current.reshape(-1)[0]) if reciprocal else float(current.reshape(-1)[0])
    if not np.isclose(held, expected, rtol=1e-2):
        raise InputError(f"the exported graph's temperature is {held:.4f}, not the model's {expected:.4f}")
    value = np.full(current.shape, 1 / temperature if reciprocal else temperature, dtype=current.dtype)
    initializer.CopyFrom(onnx.numpy_helper.from_array(value, initializer.name))


def _insert_temperature(model: onnx.ModelProto, temperature: float) -> None:
    """Multiply the logits by 1 / ``temperature`` before the Softmax that gives ``probs``, in the logits' dtype."""
    op = _probability_op(model)
    logits = op.input[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {info.name: info.type.tensor_type.elem_type
             for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    dtype = onnx.helper.tensor_dtype_to_np_dtype(types.get(logits, onnx.TensorProto.FLOAT) or onnx.TensorProto.FLOAT)
    scale = onnx.numpy_helper.from_array(np.array(1 / temperature, dtype=dtype), f"{logits}/s3f_edge_temperature")
    scaled = f"{logits}/s3f_edge_scaled"
    model.graph.initializer.append(scale)
    index = list(model.graph.node).index(op)
    model.graph.node.insert(index, onnx.helper.make_node("Mul", [logits, scale.name], [scaled],
                                                         name=f"{op.name}/s3f_edge_temperature"))
    op.input[0] = scaled


def summary_rows(fitted: dict) -> list[list[str]]:
    """One table row per fitted file: temperature, threshold, refused on validation, set threshold, agreements."""
    rows = []
    for label, calibration in fitted.items():
        agreement, sets, ood = calibration["agreement_with_fp32"], calibration["sets"], calibration["ood"]
        rows.append([label, f"{calibration['temperature']:.3f}", f"{ood['threshold']:.3f}",
                     f"{ood['validation_refused_count']} ({ood['validation_refused']:.1%})",
                     f"p >= {1 - sets['threshold']:.3f} ({sets['coverage']:.0%})",
                     f"{sets['validation_mean_size']:.3f}",
                     f"{agreement['top1']:.1%} / {agreement['refusal']:.1%} / {agreement['sets']:.1%}"])
    return rows


SUMMARY_HEADERS = ["file", "temperature", "refusal threshold", "refused (validation)", "set: classes with (coverage)",
                   "mean set size", "same top-1 / refusal / set as FP32"]
