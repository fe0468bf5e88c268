"""ONNX Runtime backend: CPU, CUDA, or its TensorRT execution provider (engine cached on disk)."""
from __future__ import annotations

import json
import os
import platform
import warnings
from pathlib import Path

from s3f_edge.errors import InputError, MissingDependencyError
from s3f_edge.runtime.predictor import ModelContractError, Predictor, require_metadata

INTRA_OP_THREADS_VARIABLE = "S3F_EDGE_INTRA_OP_THREADS"  # a replica's share of the CPUs (set by infer --ray)
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def import_onnxruntime():
    from s3f_edge.dependencies import EXTRA_HINTS, onnxruntime_conflict

    conflict = onnxruntime_conflict()
    if conflict:
        raise MissingDependencyError(conflict)
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingDependencyError(f"ONNX Runtime is not installed: {EXTRA_HINTS['cpu']} "
                                     f"(or {EXTRA_HINTS['gpu']})") from error
    return onnxruntime


def tensorrt_cache_dir() -> Path:
    """Where ONNX Runtime's TensorRT provider keeps its engines: $S3F_EDGE_CACHE/ort-tensorrt, else ~/.cache."""
    root = os.environ.get("S3F_EDGE_CACHE") or Path.home() / ".cache" / "s3f-edge"
    return Path(root) / "ort-tensorrt"


def choose_providers(requested: list[str] | None = None) -> list[str]:
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise InputError(f"ONNX Runtime providers {missing} are not available here; available: {available}")
        return list(requested)
    return [p for p in PROVIDER_ORDER if p in available]


def provider_options(providers: list[str]) -> list[dict]:
    """Per-provider options. Without an engine cache, the TensorRT provider rebuilds its engine (minutes)
    at every start; with it, only the first start of a model on a GPU pays that."""
    options = []
    for provider in providers:
        if provider == "TensorrtExecutionProvider":
            try:  # pip's TensorRT libraries are not on the loader path; importing tensorrt loads them for ORT
                import tensorrt  # noqa: F401
            except ImportError:
                pass
            cache = tensorrt_cache_dir()
            cache.mkdir(parents=True, exist_ok=True)
            # (This provider has no TF32 switch; its FP32 engines may use TF32 on Ampere and later, so its
            # outputs get a looser bound than s3f-edge's own engines, built with TF32 off.)
            options.append({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
                            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)})
        elif provider == "CUDAExecutionProvider":
            # TF32 matmuls (on by default on Ampere and later) would break the FP32 parity tolerance of 1e-4.
            options.append({"use_tf32": "0"})
        else:
            options.append({})
    return options


def session_options(ort=None):
    """SessionOptions used for every s3f-edge session (runtime, export parity, benchmarks).

    ONNX Runtime's own defaults (intra-op threads = physical cores, all graph optimisations, sequential
    execution, memory arena on) are kept (benchmarks/ort_session_options.py): one thread, basic or
    extended optimisation and parallel execution were slower in every case; no arena was slower in
    three of four and faster once, by no more than this machine's own run-to-run spread
    (benchmarks/int8_spread.py). So only the log level is set, and the intra-op threads when
    ``INTRA_OP_THREADS_VARIABLE`` says how many CPUs this process was granted (``infer --ray`` sets it in
    each actor), so that several replicas on one machine do not each start a thread per core.
    """
    ort = ort or import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    granted = os.environ.get(INTRA_OP_THREADS_VARIABLE, "").strip()
    if granted.isdigit() and int(granted) > 0:
        options.intra_op_num_threads = int(granted)
    return options


def create_session(source, providers: list[str]):
    """An InferenceSession over a path or serialized bytes; a file ONNX Runtime cannot load is an InputError."""
    ort = import_onnxruntime()
    try:
        return ort.InferenceSession(source, session_options(ort), providers=providers,
                                    provider_options=provider_options(providers))
    except Exception as error:  # onnxruntime raises its own types for corrupt or foreign files
        name = source if isinstance(source, (str, Path)) else "the model"
        raise InputError(f"{name}: ONNX Runtime cannot load this file ({str(error).strip()[:300]}); give an .onnx "
                         "model written by s3f-edge export") from error


def x86_without_vnni() -> bool | None:
    """True on an x86 CPU without VNNI, where ONNX Runtime's int8 kernels (VPMADDUBSW) saturate 16-bit sums of
    full-range weights; False where they cannot (VNNI, ARM and other CPUs); None when the flags are unknown."""
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return False
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return not {"avx512_vnni", "avx_vnni"} & set(flags.split(":", 1)[-1].split())


class OnnxPredictor(Predictor):
    backend = "onnx"

    def __init__(self, path: Path, metadata: dict | None = None, providers: list[str] | None = None):
        chosen = choose_providers(providers)
        self.session = create_session(str(path), chosen)
        # The session already parsed the file: read s3f-edge's metadata from it rather than load it twice.
        stored = self.session.get_modelmeta().custom_metadata_map.get("s3f_edge")
        super().__init__(path, require_metadata(path, json.loads(stored) if stored else None, metadata))
        self.provider = self.session.get_providers()[0]
        if chosen[0] != "CPUExecutionProvider" and self.provider == "CPUExecutionProvider":
            warnings.warn(f"ONNX Runtime fell back to the CPU (asked for {chosen[0]}): CUDA libraries are probably "
                          "missing. Inference will be slow.", RuntimeWarning, stacklevel=2)
        self._check_int8_weights()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [output.name for output in outputs]
        if len(inputs) != 1 or not self._bind_outputs(names):
            raise InputError(f"{path}: expected one input and the outputs probs (and ood_score), found {len(inputs)} "
                             f"input(s) and outputs {sorted(names)}; export the model with s3f-edge export")
        self.input_name = inputs[0].name

    def _check_int8_weights(self) -> None:
        """Refuse an INT8 file with 8-bit weights where the CPU's int8 kernels would saturate (files without the
        key predate the choice and hold 7-bit weights)."""
        if (self.metadata.get("precision") != "int8" or int(self.metadata.get("int8_weight_bits", 7)) < 8
                or self.provider != "CPUExecutionProvider"):
            return
        lacking = x86_without_vnni()
        problem = (f"{self.path.name} holds 8-bit INT8 weights, which ONNX Runtime's int8 kernels on an x86 CPU "
                   "without VNNI can saturate (wrong outputs)")
        if lacking:
            raise ModelContractError(f"{problem}, and this CPU has no VNNI. Re-export with "
                                     "`s3f-edge export ... --precision int8 --int8-weight-bits 7`, "
                                     "or run the FP32 file.")
        if lacking is None:
            warnings.warn(f"{problem}; this CPU's flags could not be read. If it predates VNNI (Intel before Cascade "
                          "Lake, AMD before Zen 4), re-export with --int8-weight-bits 7.", RuntimeWarning, stacklevel=3)

    def _outputs_by_name(self, batch):
        keys = list(self.output_names)
        values = self.session.run([self.output_names[key] for key in keys], {self.input_name: batch})
        return dict(zip(keys, values))
