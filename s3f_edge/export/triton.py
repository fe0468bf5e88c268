"""A Triton Inference Server model repository for an exported model."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from s3f_edge.contract import OOD_SCORE, OUTPUTS, PROBS

PLATFORMS = {".onnx": "onnxruntime_onnx", ".plan": "tensorrt_plan"}


def model_config_text(name: str, platform: str, input_shape: tuple[int, int, int], num_outputs: int,
                      max_batch_size: int, preferred_batch_sizes: list[int], with_labels: bool,
                      with_score: bool = False, calibration: dict | None = None) -> str:
    """config.pbtxt in protobuf text format; dims exclude the batch dimension (max_batch_size > 0). Outputs are
    listed in the contract's order: ``probs`` first, then for a calibrated model ``ood_score``, one number per
    image: dims [ 1 ] reshaped to a scalar, Triton's way of declaring a batched output of shape (N,). A calibrated
    file's own numbers (``calibration_parameters``) become the model's ``parameters``, for clients to read."""
    label_line = '\n    label_filename: "labels.txt"' if with_labels else ""
    declared = {PROBS: f"    dims: [ {num_outputs} ]{label_line}\n",
                OOD_SCORE: "    dims: [ 1 ]\n    reshape: { shape: [ ] }\n"}
    outputs = [name for name in OUTPUTS if name == PROBS or with_score]
    output_text = "  },\n  {\n".join(f'    name: "{name}"\n    data_type: TYPE_FP32\n{declared[name]}'
                                      for name in outputs)
    preferred = ", ".join(str(b) for b in preferred_batch_sizes if b <= max_batch_size)
    return (
        f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {max_batch_size}\n"
        "input [\n  {\n"
        '    name: "image"\n    data_type: TYPE_FP32\n'
        f"    dims: [ {', '.join(str(d) for d in input_shape)} ]\n"
        "  }\n]\n"
        "output [\n  {\n"
        + output_text
        + "  }\n]\n"
        "dynamic_batching {\n"
        + (f"  preferred_batch_size: [ {preferred} ]\n" if preferred else "")
        + "  max_queue_delay_microseconds: 100\n}\n"
        + "".join(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}\n'
                  for key, value in calibration_parameters(calibration).items())
    )


def calibration_parameters(calibration: dict | None) -> dict[str, str]:
    """The numbers a client of a calibrated file needs, as Triton model parameters: the refusal threshold on
    ``ood_score`` and the prediction-set rule (LAC: the classes with ``probs`` >= 1 - threshold); the temperature
    is already inside the file's probs, recorded for reference."""
    if not calibration:
        return {}
    found = {"s3f_edge_temperature": calibration["temperature"],
             "s3f_edge_ood_threshold": calibration["ood"]["threshold"]}
    if calibration.get("sets"):
        sets = calibration["sets"]
        found.update({"s3f_edge_set_method": sets["method"], "s3f_edge_set_threshold": sets["threshold"],
                      "s3f_edge_set_coverage": sets["coverage"]})
    return {key: str(value) for key, value in found.items()}


def _model_config_module():
    """Triton's ModelConfig protobuf schema, from the tritonclient package when it is installed.

    Loaded by file path: importing tritonclient.grpc would also need grpcio.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.exists():
        return None
    module_spec = importlib.util.spec_from_file_location("s3f_edge_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def validate_config(text: str):
    """Parse config.pbtxt strictly against Triton's schema; returns the ModelConfig message.

    Raises RuntimeError when tritonclient (the schema) is not installed, and
    google.protobuf.text_format.ParseError on any unknown field, wrong type or bad enum.
    """
    from google.protobuf import text_format

    module = _model_config_module()
    if module is None:
        raise RuntimeError("validating a Triton config needs the tritonclient package: pip install tritonclient")
    return text_format.Parse(text, module.ModelConfig())


def repository_files(repo: str | Path, name: str) -> list[Path]:
    """The files ``write_repository`` writes for model ``name`` (and ``name``_trt) in ``repo``: never another
    model's, in a repository that Triton shares between models."""
    found = []
    for model_name in (name, f"{name}_trt"):
        folder = Path(repo) / model_name
        for relative in ("config.pbtxt", "config.pbtxt.failed", "labels.txt", "labels.txt.failed", "1/model.onnx",
                         "1/model.onnx.failed", "1/model.plan", "1/model.plan.failed"):
            if (folder / relative).exists():
                found.append(folder / relative)
    return found


def write_repository(repo: str | Path, name: str, model_files: list[Path], input_shape: tuple[int, int, int],
                     class_names: list[str], num_outputs: int, max_batch_size: int,
                     with_score: bool = False, calibrations: dict[Path, dict] | None = None) -> list[Path]:
    """REPO/<name>/ for the ONNX model and REPO/<name>_trt/ for a TensorRT plan, version 1 each.

    Args:
        repo: the model repository (created if missing; other models in it are left alone).
        name: the model's name in Triton.
        model_files: the files to serve: an .onnx file and/or a TensorRT engine (.engine or .plan), copied in.
        input_shape: (H, W, C) of one image.
        class_names: the classes, written to labels.txt when there is one per output.
        num_outputs: the width of the ``probs`` output (1 for a single sigmoid unit, which gets no labels.txt).
        max_batch_size: Triton's max_batch_size; dynamic batching prefers those of 4, 8, 16 and 32 up to it.
        with_score: declare the ``ood_score`` output too (a calibrated model).
        calibrations: each served file's own calibration (by file), written as its model's parameters.

    Returns:
        The model folders written.
    """
    written = []
    for model_file in model_files:
        suffix = ".plan" if model_file.suffix in (".plan", ".engine") else model_file.suffix
        platform = PLATFORMS[suffix]
        model_name = name if suffix == ".onnx" else f"{name}_trt"
        model_dir = Path(repo) / model_name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_file, model_dir / "1" / f"model{suffix}")
        with_labels = num_outputs == len(class_names)
        if with_labels:
            (model_dir / "labels.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")
        text = model_config_text(model_name, platform, input_shape, num_outputs, max_batch_size, [4, 8, 16, 32],
                                 with_labels, with_score, (calibrations or {}).get(model_file))
        try:
            validate_config(text)
        except RuntimeError:
            pass  # schema not installed here; the test suite validates the generator with it
        (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
        written.append(model_dir)
    return written
