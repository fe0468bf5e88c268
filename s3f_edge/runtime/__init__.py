"""Deployment runtime: one Predictor over Keras, ONNX Runtime and TensorRT, and folder inference.

It stands on ``s3f_edge.data`` alone and imports no TensorFlow or Keras unless it is handed a .keras
file; names below load on first use, so ``import s3f_edge.runtime`` stays cheap.
"""
from importlib import import_module

_EXPORTS = {
    "InferOptions": "s3f_edge.runtime.infer", "ClusterOptions": "s3f_edge.runtime.infer",
    "InferSummary": "s3f_edge.runtime.infer", "run_inference": "s3f_edge.runtime.infer",
    "infer_folder": "s3f_edge.runtime.local", "LocalExecutor": "s3f_edge.runtime.local",
    "ModelContractError": "s3f_edge.errors", "Predictor": "s3f_edge.runtime.predictor",
    "load_predictor": "s3f_edge.runtime.formats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 's3f_edge.runtime' has no attribute {name!r}")
