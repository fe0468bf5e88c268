"""`s3f-edge export`: Keras -> ONNX (-> TensorRT, -> Triton), with the FFT lowered and every step verified."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from s3f_edge.data.preprocess import Preprocessing
from s3f_edge.export.checks import ExportCheckError, check_onnx
from s3f_edge.export.parity import ParityResult, compare, image_labels, parity_failures, random_batch, real_batch
from s3f_edge.model import spectral_filters
from s3f_edge.model.metadata import package_versions

FFT_LOWERINGS = ("matmul", "dft")
PRECISIONS = ("fp32", "fp16", "int8")
MAX_TF2ONNX_OPSET = 18


class ParityError(RuntimeError):
    """The exported model does not compute the Keras model's function within tolerance."""


@dataclass
class ExportOptions:
    out_dir: Path
    fft: str = "matmul"
    opset: int = 17
    precision: str = "fp32"
    calib: Path | None = None  # images for INT8 calibration
    parity_images: Path | None = None  # real images for parity (default: the packaged set)
    trt: bool = False
    trt_batch: tuple[int, int, int] = (1, 8, 32)
    timing_cache: Path | None = None
    triton_repo: Path | None = None
    triton_name: str = "s3f_net"
    class_names: list[str] | None = None  # needed only for models without s3f-edge metadata

    def validate(self) -> None:
        if self.fft not in FFT_LOWERINGS:
            raise ValueError(f"--fft must be one of {FFT_LOWERINGS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}")
        lowest = 17 if self.fft == "dft" else 13
        if not lowest <= self.opset <= MAX_TF2ONNX_OPSET:
            raise ValueError(f"--opset {self.opset}: use {lowest}-{MAX_TF2ONNX_OPSET} with --fft {self.fft} "
                             f"({'ONNX DFT exists from opset 17; ' if self.fft == 'dft' else ''}tf2onnx 1.17 writes up to 18)")
        if self.precision == "int8" and self.calib is None:
            raise ValueError("--precision int8 needs --calib IMAGES (a folder of representative images)")
        low, opt, high = self.trt_batch
        if not 1 <= low <= opt <= high:
            raise ValueError(f"TensorRT batch profile must satisfy 1 <= min <= opt <= max, got {self.trt_batch}")


@dataclass
class ExportResult:
    onnx_path: Path
    metadata: dict
    rows: list[dict] = field(default_factory=list)  # one per artefact: format, file, size, status, seconds
    parity: dict[str, list[ParityResult]] = field(default_factory=dict)


def keras_to_onnx(model, fft: str = "matmul", opset: int = 17) -> onnx.ModelProto:
    """Convert with every SpectralFilter lowered; input ``image`` (dynamic batch), output ``probs``."""
    import tensorflow as tf
    import tf2onnx

    from s3f_edge.export.dft_handlers import dft_op_handlers
    from s3f_edge.model import set_spectral_mode

    previous = {layer.name: layer.mode for layer in spectral_filters(model)}
    set_spectral_mode(model, fft)
    try:
        signature = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image"),)
        function = tf.function(lambda image: {"probs": model(image, training=False)}, input_signature=signature)
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=signature, opset=opset,
            custom_op_handlers=dft_op_handlers() if fft == "dft" else None,
        )
    finally:
        for layer in spectral_filters(model):
            layer.mode = previous[layer.name]
    return proto


def model_metadata(keras_path: Path, model, class_names: list[str] | None) -> dict:
    """The training metadata stored in the .keras file, or one built from the user's class names."""
    from s3f_edge.model.metadata import file_sha256, read_metadata

    stored = read_metadata(keras_path)
    if stored is None:
        if not class_names:
            raise ValueError(
                f"{keras_path} carries no s3f-edge metadata (e.g. a file from the original release); "
                "give its classes in output order with --class-names a,b,c"
            )
        height, width, channels = model.input_shape[1:]
        stored = {"class_names": list(class_names),
                  "preprocessing": Preprocessing(height=height, width=width, channels=channels).to_dict()}
    outputs = model.output_shape[-1]
    expected = 2 if outputs == 1 else outputs
    if len(stored["class_names"]) != expected:
        raise ValueError(f"the model has {outputs} output(s) but {len(stored['class_names'])} class names")
    return {**stored, "source_model": keras_path.name, "source_sha256": file_sha256(keras_path)}


def _onnx_session(path_or_proto):
    import onnxruntime as ort

    source = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _run_parity(keras_model, session, contract: Preprocessing, parity_images: Path | None,
                class_names: list[str]) -> list[ParityResult]:
    results = []
    labels = image_labels(parity_images, class_names)
    for name, batch in (("real images", real_batch(contract, parity_images)), ("random", random_batch(contract, 8))):
        reference = keras_model.predict(batch, batch_size=16, verbose=0)
        candidate = np.concatenate([session.run(["probs"], {"image": batch[i:i + 16]})[0] for i in range(0, len(batch), 16)])
        results.append(compare(reference, candidate, name, labels if name == "real images" else None))
    return results


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
    """Export ``keras_path`` per ``options``; raises on any failed check or parity test."""
    from s3f_edge.export.precision import calibration_images, spectral_node_names, to_float16, to_int8
    from s3f_edge.model import load_model

    options.validate()
    if options.trt:  # fail before minutes of conversion, not after
        from s3f_edge.export.tensorrt import gpu_identity, import_tensorrt

        import_tensorrt()
        gpu_identity()
    keras_path = Path(keras_path)
    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(keras_path)
    spectral_names = [layer.name for layer in spectral_filters(model)]
    metadata = model_metadata(keras_path, model, options.class_names)
    contract = Preprocessing.from_dict(metadata["preprocessing"])
    calib_images = calibration_images(options.calib, contract) if options.calib else None

    started = time.perf_counter()
    proto = keras_to_onnx(model, options.fft, options.opset)
    check_onnx(proto, options.opset, tensorrt=options.trt and options.fft == "matmul")
    metadata.update({"fft_lowering": options.fft, "opset": options.opset, "precision": "fp32",
                     "input_name": "image", "output_name": "probs",
                     "versions": package_versions("tensorflow", "tf2onnx", "onnx")})
    session = _onnx_session(proto)
    parity = {"fp32": _run_parity(model, session, contract, options.parity_images, metadata["class_names"])}
    failures = parity_failures(parity["fp32"], "fp32")
    if failures:
        raise ParityError("ONNX Runtime disagrees with Keras (fp32): " + "; ".join(failures))
    onnx_path = out_dir / "model.onnx"
    _attach_metadata(proto, metadata)
    onnx.save(proto, onnx_path)
    result = ExportResult(onnx_path, metadata, parity=parity)
    result.rows.append(_row(f"onnx fp32 ({options.fft})", onnx_path, "ok", time.perf_counter() - started))

    deployed = onnx_path
    if options.precision != "fp32":
        started = time.perf_counter()
        keep = spectral_node_names(proto, spectral_names)
        reduced_path = out_dir / f"model.{options.precision}.onnx"
        if options.precision == "fp16":
            reduced = to_float16(proto, keep)
        else:
            to_int8(onnx_path, reduced_path, calib_images, keep)
            reduced = onnx.load(reduced_path)
        check_onnx(reduced, options.opset, tensorrt=False)
        reduced_meta = {**metadata, "precision": options.precision}
        _attach_metadata(reduced, reduced_meta)
        onnx.save(reduced, reduced_path)
        results = _run_parity(model, _onnx_session(reduced_path), contract, options.parity_images,
                              metadata["class_names"])
        parity[options.precision] = results
        failures = parity_failures(results, options.precision)
        status = "ok" if not failures else "FAILED: " + "; ".join(failures)
        result.rows.append(_row(f"onnx {options.precision}", reduced_path, status, time.perf_counter() - started))
        if failures:
            raise ParityError(f"{options.precision} model disagrees with Keras: " + "; ".join(failures))
        deployed = reduced_path

    (out_dir / "model.json").write_text(json.dumps({**metadata, "precision": options.precision,
                                                    "parity": {k: [r.to_dict() for r in v] for k, v in parity.items()}},
                                                   indent=2))

    engine_path = None
    if options.trt:
        from s3f_edge.export.tensorrt import EngineOptions, build_engine

        started = time.perf_counter()
        engine_path = out_dir / f"model.{options.precision}.engine"
        low, opt, high = options.trt_batch
        build_engine(
            deployed if options.precision != "fp32" else onnx_path, engine_path, contract.input_shape,
            EngineOptions(precision=options.precision, min_batch=low, opt_batch=opt, max_batch=high,
                          timing_cache=options.timing_cache or out_dir / "timing.cache",
                          calibration_images=calib_images,
                          spectral_layer_names=tuple(spectral_names)),
            model_metadata={**metadata, "precision": options.precision},
        )
        result.rows.append(_row(f"tensorrt {options.precision}", engine_path, "ok", time.perf_counter() - started))

    if options.triton_repo:
        from s3f_edge.export.triton import write_repository

        started = time.perf_counter()
        files = [deployed] + ([engine_path] if engine_path else [])
        dirs = write_repository(options.triton_repo, options.triton_name, files, contract.input_shape,
                                metadata["class_names"], int(model.output_shape[-1]), options.trt_batch[2])
        for directory in dirs:
            result.rows.append(_row("triton", directory / "config.pbtxt", "ok", time.perf_counter() - started))
    return result


__all__ = ["ExportCheckError", "ExportOptions", "ExportResult", "ParityError", "export_model", "keras_to_onnx"]
