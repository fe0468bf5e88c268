"""Shared test helpers: models whose outputs really depend on their input."""
from pathlib import Path

import keras
import numpy as np

from s3f_edge import build_model
from s3f_edge.data.preprocess import Preprocessing, load_image
from s3f_edge.model.metadata import save_model_atomically


def input_sensitive(model: keras.Model, seed: int = 0, logit_scale: float = 4.0) -> keras.Model:
    """Give BatchNorm real statistics (freshly built, the model's output hardly depends on its input)
    and widen the head's logits, so that parity checks compare something."""
    shape = model.input_shape[1:]
    # Real images, so that the statistics fit the images the tests feed (uniform noise would not).
    contract = Preprocessing(height=shape[0], width=shape[1], channels=shape[2])
    files = sorted((Path(__file__).resolve().parent.parent / "samples" / "brain_mri" / "train").rglob("*.jpg"))
    x = np.stack([load_image(f, contract) for f in files[::3]])
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in norms:
        layer.momentum = 0.99
    head = model.get_layer("probs") if any(l.name == "probs" for l in model.layers) else model.layers[-1]
    head.kernel.assign(head.kernel.numpy() * logit_scale)
    return model


def saved_model(path: Path, preset: str, input_shape, kind: str = "s3f", class_names=None, seed: int = 0,
                **kwargs) -> Path:
    """Build (seeded: tests must not depend on the draw), make input-sensitive and save a model with
    s3f-edge metadata, as train would."""
    keras.utils.set_random_seed(seed)
    model = input_sensitive(build_model(preset, kind=kind, input_shape=input_shape, **kwargs), seed=seed)
    outputs = model.output_shape[-1]
    names = class_names or [f"class_{i}" for i in range(2 if outputs == 1 else outputs)]
    height, width, channels = input_shape
    metadata = {"class_names": names, "preprocessing": Preprocessing(height=height, width=width, channels=channels).to_dict(),
                "preset": preset, "kind": kind}
    save_model_atomically(model, path, metadata)
    return path
