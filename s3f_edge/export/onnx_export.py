"""`s3f-edge export`: Keras -> ONNX (-> TensorRT, -> Triton), with the FFT lowered and every step verified."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from s3f_edge.contract import INPUT, OUTPUTS, PROBS, outputs_by_name
from s3f_edge.data.preprocess import Preprocessing
from s3f_edge.errors import InputError, ParityError, S3FEdgeError
from s3f_edge.export.checks import ExportCheckError, check_onnx
from s3f_edge.export.choices import CALIBRATION_METHODS, FFT_LOWERINGS, INT8_WEIGHT_BITS, MAX_TF2ONNX_OPSET, PRECISIONS
from s3f_edge.export.graph_outputs import order_outputs
from s3f_edge.model import spectral_filters
from s3f_edge.model.calibration import head, is_calibrated
from s3f_edge.model.class_codes import class_codes_for
from s3f_edge.model.metadata import package_versions
from s3f_edge.model.reference import float32_reference
from s3f_edge.outputs import claim_outputs, ensure_writable, write_json
from s3f_edge.runtime.parity import (
    ParityResult,
    compare_outputs,
    image_labels,
    parity_failures,
    random_batch,
    real_batch,
)


@dataclass
class ExportOptions:
    out_dir: Path
    fft: str = "matmul"
    opset: int = 17
    precision: str = "fp32"
    calib: Path | None = None  # images for INT8 calibration (a seeded sample of calib_images of them)
    calib_images: int = 1024
    calib_method: str = "percentile"  # minmax | percentile | entropy
    int8_weight_bits: int = 8  # 7: exact on x86 CPUs without VNNI, less accurate (export/precision.py:to_int8)
    parity_images: Path | None = None  # real images for parity (default: the packaged set)
    trt: bool = False
    trt_batch: tuple[int, int, int] = (1, 8, 32)
    timing_cache: Path | None = None
    triton_repo: Path | None = None
    triton_name: str = "s3f_net"
    class_names: list[str] | None = None  # needed only for models without s3f-edge metadata
    class_codes: Path | None = None  # a class-code file: how DICOM reports code each class (model.class_codes)
    overwrite: bool = False  # replace an earlier export's files in out_dir (and triton_repo); else refuse them
    data: Path | None = None  # the dataset a calibrated model was calibrated on: each file is fitted on its own
    copy_calibration: bool = False  # without data: copy the Keras model's calibration into every file, marked so

    def validate(self) -> None:
        if self.fft not in FFT_LOWERINGS:
            raise InputError(f"--fft must be one of {FFT_LOWERINGS}")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {PRECISIONS}")
        lowest = 17 if self.fft == "dft" else 13
        if not lowest <= self.opset <= MAX_TF2ONNX_OPSET:
            raise InputError(f"--opset {self.opset}: use {lowest}-{MAX_TF2ONNX_OPSET} with --fft {self.fft} "
                             f"({'ONNX DFT exists from opset 17; ' if self.fft == 'dft' else ''}"
                             "tf2onnx 1.17 writes up to 18)")
        if self.precision == "int8" and self.calib is None:
            raise InputError("--precision int8 needs --calib IMAGES (a folder of representative images)")
        if self.calib_method not in CALIBRATION_METHODS or self.calib_images < 1:
            raise InputError(f"--calib-method must be one of {CALIBRATION_METHODS} and --calib-images at least 1")
        if self.int8_weight_bits not in INT8_WEIGHT_BITS:
            raise InputError(f"--int8-weight-bits must be one of {INT8_WEIGHT_BITS}")
        low, opt, high = self.trt_batch
        if not 1 <= low <= opt <= high:
            raise InputError(f"TensorRT batch profile must satisfy 1 <= min <= opt <= max, got {self.trt_batch}")


@dataclass
class ExportResult:
    onnx_path: Path
    metadata: dict
    rows: list[dict] = field(default_factory=list)  # one per artefact: format, file, size, status, seconds
    parity: dict[str, list[ParityResult]] = field(default_factory=dict)
    calibrations: dict[str, dict] = field(default_factory=dict)  # file label -> its own fitted calibration


def model_outputs(model, image) -> dict:
    """The model's outputs by name: ``probs``, and ``ood_score`` for a calibrated model."""
    outputs = model(image, training=False)
    return outputs_by_name(outputs)


def keras_to_onnx(model, fft: str = "matmul", opset: int = 17) -> onnx.ModelProto:
    """Convert with every SpectralFilter lowered; input ``image`` (dynamic batch), output 0 ``probs`` and, for a
    calibrated model, output 1 ``ood_score`` (the contract's order, whatever order tf2onnx wrote).

    The SpectralFilters' own modes are restored afterwards. The graph is not checked here (``check_onnx``).

    Args:
        model: the Keras model (TensorFlow backend).
        fft: the SpectralFilter form exported (``FFT_LOWERINGS``): ``"matmul"`` (real matrix products, any opset)
            or ``"dft"`` (ONNX ``DFT`` nodes, opset 17 and later).
        opset: the ONNX opset written.

    Returns:
        The ONNX model, without s3f-edge metadata.
    """
    import tensorflow as tf
    import tf2onnx

    from s3f_edge.export.dft_handlers import dft_op_handlers
    from s3f_edge.model import set_spectral_mode

    previous = {layer.name: layer.mode for layer in spectral_filters(model)}
    set_spectral_mode(model, fft)
    try:
        signature = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image"),)
        function = tf.function(lambda image: model_outputs(model, image), input_signature=signature)
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=signature, opset=opset,
            custom_op_handlers=dft_op_handlers() if fft == "dft" else None,
        )
    finally:
        for layer in spectral_filters(model):
            layer.mode = previous[layer.name]
    return order_outputs(proto)  # tf2onnx flattens the outputs dict in sorted key order: ood_score first


def model_metadata(keras_path: Path, model, class_names: list[str] | None) -> dict:
    """The training metadata stored in the .keras file, or one built from the user's class names."""
    from s3f_edge.data.files import file_sha256
    from s3f_edge.model.metadata import read_metadata

    stored = read_metadata(keras_path)
    if stored is None:
        if not class_names:
            raise InputError(
                f"{keras_path} carries no s3f-edge metadata (e.g. a file from the original release); "
                "give its classes in output order with --class-names a,b,c"
            )
        height, width, channels = model.input_shape[1:]
        stored = {"class_names": list(class_names),
                  "preprocessing": Preprocessing(height=height, width=width, channels=channels).to_dict()}
    outputs = head(model).units
    expected = 2 if outputs == 1 else outputs
    if len(stored["class_names"]) != expected:
        raise InputError(f"the model has {outputs} output(s) but {len(stored['class_names'])} class names")
    return {**stored, "source_model": keras_path.name, "source_sha256": file_sha256(keras_path)}


def _onnx_session(path_or_proto):
    """A CPU session for parity: the reference for every export, whatever providers the machine has."""
    from s3f_edge.runtime.onnx_backend import create_session

    source = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
    return create_session(source, ["CPUExecutionProvider"])


def _session_predict(session):
    """batch -> outputs by name of an ONNX Runtime session, 16 images at a time."""
    names = [output.name for output in session.get_outputs()]

    def predict(batch):
        parts = [session.run(names, {"image": batch[i:i + 16]}) for i in range(0, len(batch), 16)]
        return {name: np.concatenate([part[j] for part in parts]) for j, name in enumerate(names)}

    return predict


def _keras_outputs(keras_model, batch: np.ndarray) -> dict:
    with float32_reference():
        outputs = keras_model.predict(batch, batch_size=16, verbose=0)
    return outputs_by_name(outputs)


def _run_parity(keras_model, predict, contract: Preprocessing, parity_images: Path | None,
                class_names: list[str], threshold: float | None = None) -> list[ParityResult]:
    """Keras against ``predict`` (any backend) on real images and on fresh random inputs: the probabilities, and
    for a calibrated model the out-of-distribution scores and refusal decisions."""
    results = []
    labels = image_labels(parity_images, class_names)
    for name, batch in (("real images", real_batch(contract, parity_images)), ("random", random_batch(contract, 8))):
        results.append(compare_outputs(_keras_outputs(keras_model, batch), predict(batch), name,
                                       labels if name == "real images" else None, threshold))
    return results


# The files `export` writes into its folder. The TensorRT timing cache is not among them: it holds kernel timings
# of one GPU, valid for any model, and is kept.
# A reduced-precision file's calibration copied from the Keras model (export --copy-calibration), not fitted on it.
COPIED_CALIBRATION = "keras, copied: not fitted on this file's outputs (export --copy-calibration)"
EXPORT_PATTERNS = ("model.json", "model.onnx", "model.*.onnx", "model*.onnx.failed", "model.*.engine",
                   "model.*.engine.*")


def export_artefacts(out_dir: str | Path, triton_repo: str | Path | None = None,
                     triton_name: str = "s3f_net") -> list[Path]:
    """The files an export wrote: in ``out_dir``, only names `export` itself writes; in ``triton_repo``, only
    model ``triton_name``'s files (a Triton repository holds other models too).

    Args:
        out_dir: an export folder (it need not exist).
        triton_repo: a Triton model repository to search too; None: none.
        triton_name: the model's name in ``triton_repo`` (its ``<name>_trt`` files included).

    Returns:
        The existing files, sorted.
    """
    from s3f_edge.export.triton import repository_files

    found = []
    if Path(out_dir).is_dir():
        found += [p for pattern in EXPORT_PATTERNS for p in Path(out_dir).glob(pattern)]
    if triton_repo is not None:
        found += repository_files(triton_repo, triton_name)
    return sorted(set(found))


def _set_aside(path: Path) -> Path:
    """Rename a file that failed its checks so nothing mistakes it for a good export."""
    failed = path.with_name(path.name + ".failed")
    path.replace(failed)
    return failed


def _set_aside_all(paths: list[Path]) -> None:
    """After a failure: every file this export wrote becomes ``*.failed``, keeping the failure's own error visible."""
    for path in paths:
        if not path.name.endswith(".failed"):
            try:
                _set_aside(path)
            except OSError:
                pass  # the original error matters more than a file that could not be renamed


def _require_parity(keras_model, predict, artefact: Path, label: str, precision: str, contract: Preprocessing,
                    options: "ExportOptions", metadata: dict, parity: dict) -> None:
    """Hold a written artefact to Keras's outputs; on failure rename it *.failed and raise ParityError."""
    calibration = metadata.get("calibration") or {}
    threshold = calibration.get("ood", {}).get("threshold")
    results = _run_parity(keras_model, predict, contract, options.parity_images, metadata["class_names"], threshold)
    parity[label] = results
    failures = parity_failures(results, precision)
    if failures:
        failed = _set_aside(artefact)
        raise ParityError(f"{label} disagrees with Keras: " + "; ".join(failures)
                          + f"; the file was kept as {failed.name} for inspection")


def _attach_metadata(model: onnx.ModelProto, metadata: dict) -> None:
    del model.metadata_props[:]
    entries = {"s3f_edge": json.dumps(metadata, sort_keys=True),
               "class_names": json.dumps(metadata["class_names"]),
               "preprocessing": json.dumps(metadata["preprocessing"], sort_keys=True),
               "fft_lowering": metadata["fft_lowering"], "precision": metadata["precision"]}
    onnx.helper.set_model_props(model, entries)
    model.producer_name, model.producer_version = "s3f-edge", metadata["versions"]["s3f_edge"]


def _row(fmt: str, path: Path | None, status: str, seconds: float) -> dict:
    size = f"{path.stat().st_size / 1e6:.1f}" if path is not None and path.exists() else "-"
    return {"format": fmt, "file": str(path) if path else "-", "size_mb": size, "status": status,
            "seconds": round(seconds, 1)}


def export_model(keras_path: str | Path, options: ExportOptions) -> ExportResult:
    """Export ``keras_path`` per ``options``; raises on any failed check or parity test.

    model.json is written last and marks a finished export. On a failure, every file this export wrote is renamed
    ``*.failed`` (kept for inspection) except the files that already passed all their checks: when the FP16 or
    INT8 step (or the engine, or Triton) fails, the verified model.onnx stays usable, and the error says so.
    Earlier exports' files in ``options.out_dir`` are refused unless ``options.overwrite``, so a folder never
    mixes two models.

    Args:
        keras_path: the trained model (.keras).
        options: where and how to export (``ExportOptions``).

    Returns:
        The written files, their metadata and the parity results (``ExportResult``).
    """
    options.validate()
    keras_path = Path(keras_path)
    if keras_path.suffix.lower() != ".keras":
        kind = keras_path.suffix or "suffix-less"
        raise InputError(f"{keras_path}: export takes the trained .keras model, not a {kind} file (exported files "
                         "are checked with s3f-edge verify)")
    out_dir = Path(options.out_dir)
    ensure_writable(out_dir, "--out", folder=True)
    if options.triton_repo is not None:
        ensure_writable(options.triton_repo, "--triton", folder=True)
    trt_version = None
    if options.trt:  # fail before minutes of conversion, not after
        from s3f_edge.runtime.tensorrt_env import gpu_identity, import_tensorrt, version_tuple

        trt_version = version_tuple(import_tensorrt().__version__)
        gpu_identity()
    from s3f_edge.model import load_model

    model = load_model(keras_path)
    metadata = model_metadata(keras_path, model, options.class_names)
    if options.class_codes is not None:
        metadata["class_codes"] = class_codes_for(options.class_codes, metadata["class_names"])
    contract = Preprocessing.from_dict(metadata["preprocessing"])
    real_batch(contract, options.parity_images)  # no readable parity image: refused before any work
    calib_images = _calibration_images(options, contract)
    validation = _validation(model, metadata, contract, options)
    claim_outputs(export_artefacts(out_dir, options.triton_repo, options.triton_name), overwrite=options.overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    verified: dict[Path, str | None] = {}  # files that passed every check -> what the error calls them
    try:
        return _export(model, metadata, contract, calib_images, trt_version, options, verified, validation)
    except BaseException as error:
        _set_aside_all([p for p in export_artefacts(out_dir, options.triton_repo, options.triton_name)
                        if p not in verified])
        named = [f"{path.name} ({label})" for path, label in verified.items() if label]
        if named and isinstance(error, S3FEdgeError):  # a user's error: one line, which also says what is kept
            kept = (f"{named[0]} passed its checks and is kept" if len(named) == 1 else
                    f"{', '.join(named)} passed their checks and are kept")
            error.args = (f"{error}; {kept} (fix the cause, then export again with --overwrite)",)
        raise


def _calibration_images(options: ExportOptions, contract: Preprocessing):
    """The INT8 calibration sample, or None when the export needs none."""
    from s3f_edge.export.precision import calibration_images

    return calibration_images(options.calib, contract, options.calib_images) if options.calib else None


def _validation(model, metadata: dict, contract: Preprocessing, options: ExportOptions):
    """A calibrated model's validation images with the Keras model's decisions on them, or None: a model that is
    not calibrated, or an FP32-only export without --data (its outputs equal Keras's, parity proves it, so the
    model's own calibration holds for it). Refused before any work: reduced precision or an engine without
    --data, whose calibration would be copied from a model whose outputs it does not give."""
    from s3f_edge.export.guarantees import prepare, validation_images

    if not is_calibrated(model):
        return None
    if options.data is None:
        if (options.precision != "fp32" or options.trt) and not options.copy_calibration:
            what = f"--precision {options.precision}" if options.precision != "fp32" else "--trt"
            raise InputError(f"{what} changes the model's outputs, so the refusal threshold, temperature and "
                             "prediction sets must be fitted on that file's own outputs: give --data DATA, the "
                             "dataset the model was calibrated on (or --copy-calibration to copy the Keras model's, "
                             "marked as not fitted on the file)")
        return None
    images, labels = validation_images(metadata["calibration"], options.data, contract)
    return prepare(metadata["calibration"], _keras_outputs(model, images), images, labels)


def _fit_onnx_file(validation, label: str, path: Path, proto: onnx.ModelProto, metadata: dict) -> dict:
    """Fit a written ONNX file's own calibration (``export.guarantees``), write its temperature into the graph and
    the rest into its metadata, save it, and check that the saved file gives the fitted probabilities."""
    from s3f_edge.export.guarantees import fit_file, set_temperature
    from s3f_edge.runtime.calibration import logits_from_probabilities, scaled_probabilities

    outputs = _session_predict(_onnx_session(path))(validation.images)
    calibration = fit_file(validation, label, outputs)
    held = validation.calibration["temperature"]
    set_temperature(proto, calibration["temperature"], held)
    file_metadata = {**metadata, "calibration": calibration}
    _attach_metadata(proto, file_metadata)
    onnx.save(proto, path)
    check = validation.images[:32]
    expected = scaled_probabilities(logits_from_probabilities(outputs[PROBS][:32], held), calibration["temperature"])
    got = _session_predict(_onnx_session(path))(check)[PROBS]
    if not np.allclose(got, expected, atol=2e-3):
        raise RuntimeError(f"{path.name}: the probabilities after its temperature was set are not the fitted ones: "
                           "a bug in s3f-edge")
    return file_metadata


def _export(model, metadata: dict, contract: Preprocessing, calib_images, trt_version, options: ExportOptions,
            verified: dict[Path, str | None], validation=None) -> ExportResult:
    """The export's steps; each file that passes all its checks is added to ``verified`` (kept on a later failure)."""
    from s3f_edge.export.precision import fp16_float_nodes, int8_float_nodes, to_float16, to_int8

    out_dir = Path(options.out_dir)
    started = time.perf_counter()
    proto = keras_to_onnx(model, options.fft, options.opset)
    check_onnx(proto, options.opset, tensorrt=options.trt, trt_version=trt_version)
    metadata.update({"fft_lowering": options.fft, "opset": options.opset, "precision": "fp32",
                     "input_name": INPUT, "output_names": list(OUTPUTS) if is_calibrated(model) else [PROBS],
                     "versions": package_versions("tensorflow", "tf2onnx", "onnx")})
    onnx_path = out_dir / "model.onnx"
    _attach_metadata(proto, metadata)
    onnx.save(proto, onnx_path)
    parity: dict[str, list[ParityResult]] = {}
    _require_parity(model, _session_predict(_onnx_session(onnx_path)), onnx_path, "fp32", "fp32", contract, options,
                    metadata, parity)
    deployed_metadata = metadata
    if validation is not None:
        deployed_metadata = _fit_or_set_aside(validation, "onnx fp32", onnx_path, proto, metadata)
    verified[onnx_path] = "fp32"
    result = ExportResult(onnx_path, deployed_metadata, parity=parity)
    result.rows.append(_row(f"onnx fp32 ({options.fft})", onnx_path, "ok", time.perf_counter() - started))

    deployed = onnx_path
    if options.precision != "fp32":
        started = time.perf_counter()
        # FP16: the spectral block and the score stay FP32; INT8: also the layers measured to matter.
        keep = (fp16_float_nodes if options.precision == "fp16" else int8_float_nodes)(proto, model)
        reduced_path = out_dir / f"model.{options.precision}.onnx"
        if options.precision == "fp16":
            reduced = to_float16(proto, keep)
        else:
            to_int8(onnx_path, reduced_path, calib_images, keep, options.calib_method, options.int8_weight_bits)
            reduced = onnx.load(reduced_path)
        reduced_meta = {**metadata, "precision": options.precision}
        if validation is None and metadata.get("calibration"):  # --copy-calibration: said in the file itself
            copied = metadata["calibration"]
            reduced_meta["calibration"] = {**copied, "fitted_on": {**copied.get("fitted_on", {}),
                                                                    "artefact": COPIED_CALIBRATION}}
        if options.precision == "int8":
            reduced_meta.update({"int8_weight_bits": options.int8_weight_bits, "int8_calibration": {
                "images": len(calib_images), "method": options.calib_method, "folder": str(options.calib)}})
        _attach_metadata(reduced, reduced_meta)
        onnx.save(reduced, reduced_path)
        try:
            # The file that goes to TensorRT is the one checked against its parser.
            check_onnx(reduced, options.opset, tensorrt=options.trt, trt_version=trt_version,
                       quantized=options.precision == "int8")
        except ExportCheckError:
            _set_aside(reduced_path)
            raise
        _require_parity(model, _session_predict(_onnx_session(reduced_path)), reduced_path, options.precision,
                        options.precision, contract, options, metadata, parity)
        if validation is not None:
            deployed_metadata = _fit_or_set_aside(validation, f"onnx {options.precision}", reduced_path, reduced,
                                                  reduced_meta)
        else:
            deployed_metadata = reduced_meta
        verified[reduced_path] = options.precision
        result.rows.append(_row(f"onnx {options.precision}", reduced_path, "ok", time.perf_counter() - started))
        deployed = reduced_path

    engine_path = None
    if options.trt:
        engine_path = _build_and_check_engine(model, deployed, out_dir, contract, deployed_metadata, options, parity,
                                              result, validation)
        from s3f_edge.runtime.tensorrt_env import sidecar_path

        verified.update({engine_path: f"tensorrt {options.precision}", sidecar_path(engine_path): None})

    if options.triton_repo:
        from s3f_edge.export.triton import write_repository

        started = time.perf_counter()
        files = [deployed] + ([engine_path] if engine_path else [])
        dirs = write_repository(options.triton_repo, options.triton_name, files, contract.input_shape,
                                metadata["class_names"], head(model).units, options.trt_batch[2], is_calibrated(model),
                                {deployed: deployed_metadata.get("calibration"),
                                 engine_path: validation.fitted.get(f"tensorrt {options.precision}")
                                 if validation is not None else deployed_metadata.get("calibration")})
        for directory in dirs:
            result.rows.append(_row("triton", directory / "config.pbtxt", "ok", time.perf_counter() - started))
    # Last: model.json marks a finished export.
    result.calibrations = dict(validation.fitted) if validation is not None else {}
    write_json(out_dir / "model.json", {**deployed_metadata, "precision": options.precision,
                                        "parity": {k: [r.to_dict() for r in v] for k, v in parity.items()},
                                        **({"calibrations": result.calibrations} if result.calibrations else {})})
    return result


def _fit_or_set_aside(validation, label: str, path: Path, proto: onnx.ModelProto, metadata: dict) -> dict:
    """``_fit_onnx_file``; a file that disagrees with FP32 beyond the limits is renamed *.failed, as parity does."""
    try:
        return _fit_onnx_file(validation, label, path, proto, metadata)
    except ParityError as error:
        failed = _set_aside(path)
        raise ParityError(f"{error}; the file was kept as {failed.name} for inspection") from None


def _build_and_check_engine(model, onnx_file: Path, out_dir: Path, contract: Preprocessing, metadata: dict,
                            options: ExportOptions, parity: dict, result: ExportResult, validation=None) -> Path:
    """Build the engine from the file that passed its checks, then hold it to the same parity as that file; for a
    calibrated model, fit the engine's own refusal threshold and sets on its outputs (its temperature is the ONNX
    file's: an engine's graph cannot be edited) and record them in its sidecar."""
    from s3f_edge.export.choices import engine_file_name
    from s3f_edge.export.tensorrt import EngineOptions, build_engine
    from s3f_edge.runtime.tensorrt_backend import TensorRTPredictor

    started = time.perf_counter()
    engine_path = out_dir / engine_file_name(options.precision)
    low, opt, high = options.trt_batch
    engine_metadata = {**metadata, "precision": options.precision}
    if validation is None and metadata.get("calibration"):  # --copy-calibration: said in the sidecar itself
        copied = metadata["calibration"]
        engine_metadata["calibration"] = {**copied, "fitted_on": {**copied.get("fitted_on", {}),
                                                                  "artefact": COPIED_CALIBRATION}}
    build_engine(onnx_file, engine_path, contract.input_shape,
                 EngineOptions(precision=options.precision, min_batch=low, opt_batch=opt, max_batch=high,
                               timing_cache=options.timing_cache or out_dir / "timing.cache"),
                 model_metadata=engine_metadata)
    _require_parity(model, TensorRTPredictor(engine_path)._outputs_by_name, engine_path,
                    f"tensorrt {options.precision}", options.precision, contract, options, metadata, parity)
    if validation is not None:
        from s3f_edge.export.guarantees import fit_file
        from s3f_edge.runtime.tensorrt_env import sidecar_path

        label = f"tensorrt {options.precision}"
        try:
            outputs = TensorRTPredictor(engine_path)._outputs_by_name(validation.images)
            calibration = fit_file(validation, label, outputs,
                                   graph_temperature=metadata["calibration"]["temperature"], fixed_temperature=True)
        except ParityError as error:
            failed = _set_aside(engine_path)
            raise ParityError(f"{error}; the engine was kept as {failed.name} for inspection") from None
        sidecar = json.loads(sidecar_path(engine_path).read_text())
        sidecar["model_metadata"] = {**sidecar["model_metadata"], "calibration": calibration}
        sidecar_path(engine_path).write_text(json.dumps(sidecar, indent=2))
    result.rows.append(_row(f"tensorrt {options.precision}", engine_path, "ok", time.perf_counter() - started))
    return engine_path


__all__ = ["ExportCheckError", "ExportOptions", "ExportResult", "ParityError", "export_model", "keras_to_onnx"]
