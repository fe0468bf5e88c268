"""Deployment runtime: one Predictor over Keras, ONNX Runtime and TensorRT, and folder inference."""
from s3f_edge.runtime.infer import InferSummary, infer_folder
from s3f_edge.runtime.predictor import ModelContractError, Predictor

__all__ = ["InferSummary", "ModelContractError", "Predictor", "infer_folder"]
