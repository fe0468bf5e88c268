"""Keras backend: runs a .keras file with TensorFlow. The only runtime module that needs the training
stack, imported only when a .keras file is loaded."""
from __future__ import annotations

from pathlib import Path

from s3f_edge.contract import OUTPUTS, PROBS, outputs_by_name
from s3f_edge.data.preprocess import Preprocessing
from s3f_edge.dependencies import require
from s3f_edge.runtime.predictor import Predictor, require_metadata


def check_keras_file(path: Path) -> None:
    """InputError unless ``path`` is a Keras model archive (checked without TensorFlow)."""
    from s3f_edge.model.metadata import check_keras_archive

    check_keras_archive(path)


class KerasPredictor(Predictor):
    backend = "keras"

    def __init__(self, path: Path, metadata: dict | None = None):
        require(f"running {Path(path).name} (a .keras model)", "train", "tensorflow", "keras")
        from s3f_edge.model import load_model
        from s3f_edge.model.metadata import read_metadata

        found = read_metadata(path)
        if found is None and metadata is not None and "preprocessing" not in metadata:
            self.model = load_model(path)
            h, w, c = self.model.input_shape[1:]
            metadata = {**metadata, "preprocessing": Preprocessing(height=h, width=w, channels=c).to_dict()}
        super().__init__(path, require_metadata(path, found, metadata))
        self.model = getattr(self, "model", None) or load_model(path)
        from s3f_edge.model.calibration import is_calibrated

        self._set_outputs(OUTPUTS if is_calibrated(self.model) else (PROBS,))
        import tensorflow as tf

        self.provider = "tensorflow-" + ("gpu" if tf.config.list_physical_devices("GPU") else "cpu")

    def _outputs_by_name(self, batch):
        from s3f_edge.model.reference import float32_reference

        with float32_reference():  # the reference other backends are compared with: no TF32 on GPUs
            outputs = self.model.predict_on_batch(batch)
        return outputs_by_name(outputs)
