"""Serialized TensorRT engines from exported ONNX files (TensorRT 10 and 11 Python API).

Every engine is built from a **strongly typed** network: the ONNX file carries the precisions and
the builder only follows them. The FP32 file gives an FP32 engine (TF32 off, so it meets the same
1e-4 parity as ONNX Runtime); the FP16 file has FP16 compute with Casts that keep the spectral block
in FP32; the INT8 file is explicitly quantized (Q/DQ, symmetric, zero points 0). That one path works
on TensorRT 10 and on TensorRT 11, which removed ``BuilderFlag.FP16``/``INT8``, precision constraints
and implicit-quantization calibrators (deprecated since 10.1). Nothing here sets a layer's precision,
so nothing can contradict the graph's own Cast nodes.

Every call's status is checked. The environment checks (TensorRT present, GPU identity, engine
compatibility) live in ``s3f_edge.runtime.tensorrt_backend``, shared with the engine runner.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from s3f_edge.errors import BackendError, InputError
from s3f_edge.runtime.tensorrt_env import (
    gpu_identity,
    import_tensorrt,
    register_plugins,
    sidecar_path,
    trt_logger,
    version_tuple,
)


@dataclass
class EngineOptions:
    precision: str = "fp32"  # what the ONNX file holds: fp32 | fp16 | int8 (Q/DQ)
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gib: float = 4.0
    timing_cache: Path | None = None


def _strongly_typed_network(trt, builder):
    """TensorRT 11 networks are always strongly typed (flag 0 already is); TensorRT 10 needs the flag."""
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    if network is None:
        raise BackendError("TensorRT could not create a network definition")
    return network


def _parser(trt, network, logger):
    register_plugins(trt)  # the ONNX DFT op is parsed into the cuFFT FFT plugin (TensorRT >= 11.2)
    return trt.OnnxParser(network, logger)


def network_outputs_in_contract_order(network) -> list:
    """Mark the network's outputs in the contract's order (probs, then ood_score): the engine's output tensors, and
    so its bindings, follow the order they were marked in, which the parser takes from the ONNX graph.

    Args:
        network: a TensorRT network definition, parsed.

    Returns:
        The network's output tensors, in their new order.
    """
    from s3f_edge.export.graph_outputs import in_contract_order

    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    ordered = in_contract_order(outputs, lambda tensor: tensor.name)
    if [o.name for o in ordered] != [o.name for o in outputs]:
        for tensor in outputs:
            network.unmark_output(tensor)
        for tensor in ordered:
            network.mark_output(tensor)
    return ordered


def _parser_errors(parser) -> list[str]:
    return [str(parser.get_error(i)) for i in range(parser.num_errors)]


def parser_problems(model_bytes: bytes, path: str | None = None, node_names: list[str] | None = None) -> list[str]:
    """What the installed TensorRT's own ONNX parser refuses in this model (empty: all supported).

    Uses ``supports_model_v2`` (TensorRT >= 10.1) to name the unsupported nodes, else a full parse.
    Needs TensorRT and a GPU; the op table in tensorrt_ops.py is the fallback where they are absent.
    """
    trt = import_tensorrt()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = _strongly_typed_network(trt, builder)
    parser = _parser(trt, network, logger)
    if hasattr(parser, "supports_model_v2"):
        if parser.supports_model_v2(model_bytes, path):
            return []
        problems = []
        for index in range(parser.num_subgraphs):
            if not parser.is_subgraph_supported(index):
                nodes = [node_names[i] if node_names and i < len(node_names) else f"#{i}"
                         for i in parser.get_subgraph_nodes(index)]  # the parser gives node indices
                problems.append(f"TensorRT {trt.__version__} parser: unsupported subgraph of ONNX nodes {nodes[:12]}"
                                f"{' ...' if len(nodes) > 12 else ''}")
        return (problems + _parser_errors(parser)) or [f"TensorRT {trt.__version__} parser: model not supported"]
    if parser.parse(model_bytes, path):
        return []
    return [f"TensorRT {trt.__version__} parser: {error}" for error in _parser_errors(parser)]


def _has_quantize_nodes(onnx_path: Path) -> bool:
    import onnx

    return any(node.op_type == "QuantizeLinear"
               for node in onnx.load(str(onnx_path), load_external_data=False).graph.node)


def build_engine(onnx_path: str | Path, engine_path: str | Path, input_shape: tuple[int, int, int],
                 options: EngineOptions, model_metadata: dict | None = None) -> dict:
    """Parse ``onnx_path`` into a strongly typed network, build and serialize an engine to ``engine_path``
    and write its sidecar JSON (GPU, TensorRT version, ONNX sha256, profile, I/O, model metadata).

    Args:
        onnx_path: the exported ONNX file; for INT8, the Q/DQ file that ``export --precision int8`` writes.
        engine_path: where the engine goes; its sidecar is written to ``<engine_path>.json``.
        input_shape: (H, W, C) of one image; the batch axis comes from the profile.
        options: the file's precision, the batch profile (min, opt, max), the workspace in GiB and a timing cache
            (read when it exists, then updated).
        model_metadata: s3f-edge metadata (class names, preprocessing, ...) recorded in the sidecar; None: none.

    Returns:
        The sidecar written.

    Raises:
        TensorRTUnavailable: no TensorRT or no NVIDIA GPU here.
        InputError: INT8 asked of an ONNX file without QuantizeLinear nodes.
        BackendError: TensorRT could not parse the model, refused the batch profile or the timing cache, or failed
            to build the engine.
    """
    from s3f_edge.data.files import file_sha256

    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if options.precision == "int8" and not _has_quantize_nodes(onnx_path):
        raise InputError(f"{onnx_path.name} holds no QuantizeLinear nodes; TensorRT INT8 needs the explicitly "
                         "quantized ONNX that s3f-edge export --precision int8 writes")
    identity = gpu_identity()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = _strongly_typed_network(trt, builder)
    parser = _parser(trt, network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise BackendError("TensorRT could not parse the ONNX model:\n  " + "\n  ".join(_parser_errors(parser)))
    outputs = network_outputs_in_contract_order(network)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 matmuls would break the FP32 parity tolerance (1e-4)
    profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    try:  # the binding raises (rather than returns a status) for a name or shape the network does not have
        profile.set_shape(input_name, (options.min_batch, *input_shape), (options.opt_batch, *input_shape),
                          (options.max_batch, *input_shape))
    except RuntimeError as error:
        raise BackendError(f"TensorRT refused the batch profile for input {input_name!r}: {error}") from error
    if config.add_optimization_profile(profile) < 0:
        raise BackendError(f"TensorRT refused the batch profile {options.min_batch},{options.opt_batch},"
                           f"{options.max_batch} for input {input_name!r} of shape {input_shape}")

    cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.exists() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    if timing_cache is None or not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        raise BackendError(f"TensorRT refused the timing cache {options.timing_cache} (another TensorRT version or "
                           "GPU wrote it?); delete it and export again")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError("TensorRT failed to build the engine (see TensorRT's messages above)")
    _write_atomically(engine_path, bytes(serialized))
    if options.timing_cache:
        _write_atomically(options.timing_cache, bytes(config.get_timing_cache().serialize()))

    sidecar = {
        **identity, "tensorrt_version": trt.__version__, "onnx_sha256": file_sha256(onnx_path),
        "precision": options.precision, "strongly_typed": True,
        "batch_profile": [options.min_batch, options.opt_batch, options.max_batch], "input_shape": list(input_shape),
        "io": {"input": [input_name, str(network.get_input(0).dtype)],
               "outputs": [[o.name, str(o.dtype)] for o in outputs]},
        "model_metadata": model_metadata or {},
    }
    sidecar_path(engine_path).write_text(json.dumps(sidecar, indent=2))
    return sidecar


def dft_supported(trt_version: tuple[int, int] | str | None) -> bool:
    """TensorRT parses ONNX DFT from 11.2 on (cuFFT FFT plugin)."""
    from s3f_edge.export.tensorrt_ops import DFT_MIN_TRT_VERSION

    if trt_version is None:
        return False
    return (version_tuple(trt_version) if isinstance(trt_version, str) else tuple(trt_version)) >= DFT_MIN_TRT_VERSION


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
