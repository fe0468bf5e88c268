"""Grad-CAM of the spatial branch, overlaid on the model's input image (Keras models only)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from s3f_edge.contract import PROBS, outputs_by_name
from s3f_edge.errors import InputError
from s3f_edge.results import overlay_name


def _target_layer(model):
    """The spatial branch's last feature map: our 'spatial_block4_relu', else the last 4-D layer before GAP."""
    names = [layer.name for layer in model.layers]
    if "spatial_block4_relu" in names:
        return model.get_layer("spatial_block4_relu")
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4 and "spectral" not in layer.name:
            if type(layer).__name__ in ("Activation", "ReLU", "Conv2D"):
                return layer
    raise ValueError("no spatial feature map found for Grad-CAM")


def check_explainable(predictor, classes: set[str] | None = None) -> None:
    """Raise InputError unless Grad-CAM can explain ``predictor``'s answers for ``classes`` (checked before any work).

    Args:
        predictor: a loaded ``Predictor``; Grad-CAM needs the Keras backend (it reads gradients).
        classes: the class names to explain; None: every class.

    Raises:
        InputError: not a Keras model, or a class the model does not have.
    """
    if predictor.backend != "keras":
        raise InputError("--explain needs a .keras model (Grad-CAM reads gradients); "
                         f"{predictor.name} runs on {predictor.backend}: give the .keras file it was exported from")
    unknown = (classes or set()) - set(predictor.class_names)
    if unknown:
        raise InputError(f"--explain-classes {sorted(unknown)} are not classes of this model: use some of "
                         f"{predictor.class_names}")


class GradCam:
    """Grad-CAM overlays of the spatial branch's last feature map, for the class each image was predicted as.

    Args:
        predictor: a Keras ``Predictor``.
        out_dir: where the overlay PNGs go (created if missing).
        classes: explain only images predicted as one of these class names; None: every image.

    Raises:
        InputError: see ``check_explainable``.
    """

    def __init__(self, predictor, out_dir: Path, classes: set[str] | None = None):
        check_explainable(predictor, classes)
        import keras

        self.predictor, self.out_dir, self.classes = predictor, Path(out_dir), classes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        model = predictor.model
        probs = outputs_by_name(model.output)[PROBS]  # a calibrated model has two outputs
        self.features_and_output = keras.Model(model.inputs, [_target_layer(model).output, probs])

    def heatmaps(self, images: np.ndarray, class_indices: np.ndarray) -> np.ndarray:
        """Grad-CAM maps of the given class of each image.

        Args:
            images: preprocessed images (N, H, W, C), float32 in [0, 1].
            class_indices: (N,) the class to explain for each image.

        Returns:
            (N, h, w) maps at the feature map's resolution, each scaled to a peak of 1 (an all-zero map stays zero).
        """
        import tensorflow as tf

        inputs = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            features, outputs = self.features_and_output(inputs, training=False)
            if outputs.shape[-1] == 1:  # one sigmoid unit: class 1 is p, class 0 is 1 - p
                outputs = tf.concat([1.0 - outputs, outputs], axis=-1)
            score = tf.reduce_sum(tf.gather(outputs, class_indices, axis=1, batch_dims=1))
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
        peaks = cams.max(axis=(1, 2), keepdims=True)
        return cams / np.where(peaks > 0, peaks, 1.0)

    def explain(self, paths: list[Path], images: np.ndarray, probabilities: np.ndarray) -> list[Path]:
        """Write an overlay for each image whose predicted class is among ``classes``.

        Args:
            paths: the images' files, as their rows name them (``results.overlay_name`` names each overlay).
            images: the same images, preprocessed: (N, H, W, C) float32 in [0, 1].
            probabilities: the model's (N, K) probabilities; the top class is the one explained.

        Returns:
            The PNGs written in ``out_dir``, one per image explained; an overlay of another class that an earlier
            answer of the same file left is removed.
        """
        predicted = probabilities.argmax(axis=1)
        chosen = [i for i, c in enumerate(predicted)
                  if self.classes is None or self.predictor.class_names[c] in self.classes]
        if not chosen:
            return []
        cams = self.heatmaps(images[chosen], predicted[chosen])
        written = []
        for cam, index in zip(cams, chosen):
            image = images[index]
            base = (np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., ::-1]) * 255.0
            heat = cv2.applyColorMap((cv2.resize(cam, image.shape[1::-1]) * 255).astype(np.uint8), cv2.COLORMAP_JET)
            overlay = (0.6 * base + 0.4 * heat).clip(0, 255).astype(np.uint8)
            class_name = self.predictor.class_names[predicted[index]]
            target = self.out_dir / overlay_name(paths[index], class_name)
            for other in self.predictor.class_names:  # a file answered again may now be another class
                if other != class_name:
                    (self.out_dir / overlay_name(paths[index], other)).unlink(missing_ok=True)
            cv2.imencode(".png", overlay)[1].tofile(str(target))
            written.append(target)
        return written
