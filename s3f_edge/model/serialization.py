"""Loading .keras files, ours and the original release's, and switching the FFT form."""
from __future__ import annotations

from pathlib import Path

import keras

from s3f_edge.errors import InputError, MissingFileError
from s3f_edge.model.bilinear_fusion import BilinearFusion
from s3f_edge.model.metadata import check_keras_archive
from s3f_edge.model.ood_score import OutOfDistributionScore  # noqa: F401  (registers it: calibrated models hold it)
from s3f_edge.model.spectral_filter import SpectralFilter
from s3f_edge.model.temperature_scaling import TemperatureScaling  # noqa: F401  (registers it, likewise)


# The original notebooks saved these class names (SpectralConvLayer in the stored runs).
# Their constructor arguments, weight shapes and weight order match ours, but Keras files
# store weights under the snake-cased *class* name ("layers/spectral_filter_layer/vars"),
# so loading them needs classes of the same names: thin aliases of ours.
@keras.saving.register_keras_serializable(package="s3f_edge")
class SpectralFilterLayer(SpectralFilter):
    """The original release's name for SpectralFilter (same weights and function)."""


@keras.saving.register_keras_serializable(package="s3f_edge")
class SpectralConvLayer(SpectralFilter):
    """The name the original's stored runs used for SpectralFilter."""


LEGACY_CUSTOM_OBJECTS = {
    "SpectralFilterLayer": SpectralFilterLayer,
    "SpectralConvLayer": SpectralConvLayer,
    "BilinearFusion": BilinearFusion,
}


def spectral_filters(model: keras.Model) -> list[SpectralFilter]:
    """Every SpectralFilter in ``model``, nested models included.

    Args:
        model: any Keras model.

    Returns:
        Its SpectralFilter layers (the original release's aliases included), in layer order.
    """
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, SpectralFilter)]


def set_spectral_mode(model: keras.Model, mode: str) -> keras.Model:
    """Switch every SpectralFilter to ``"fft"``, ``"matmul"`` or ``"dft"`` (weights unchanged).

    Keras keeps the graphs it traced for ``predict``/``fit``/``evaluate``, and a graph traced before the
    switch would go on running the old form, so they are dropped here and traced again on next use.
    (A ``tf.function`` of your own that calls the model must be re-created the same way.)

    Args:
        model: the model to switch, in place.
        mode: ``"fft"``, ``"matmul"`` or ``"dft"`` (``SpectralFilter`` describes the three forms).

    Returns:
        ``model`` itself.
    """
    for layer in spectral_filters(model):
        layer.mode = mode
    for attribute in ("predict_function", "train_function", "test_function"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)
    return model


def load_model(path: str | Path, *, spectral_mode: str | None = None, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` file saved by s3f-edge or by the original S3F-Net notebooks.

    Loads in Keras safe mode (no Lambda layers are executed).

    Args:
        path: the ``.keras`` file.
        spectral_mode: switch every SpectralFilter to this form after loading (``set_spectral_mode``); None keeps
            the saved form.
        compile: also restore the saved optimizer, loss and metrics (to go on training); False: an uncompiled model.

    Returns:
        The loaded ``keras.Model``.

    Raises:
        MissingFileError: no file at ``path``.
        InputError: not a ``.keras`` file, or not a valid Keras model archive.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no model file at {path}")
    if path.suffix.lower() != ".keras":
        raise InputError(f"{path} is not a .keras file; load ONNX or TensorRT files with the runtime")
    check_keras_archive(path)
    model = keras.saving.load_model(path, custom_objects=LEGACY_CUSTOM_OBJECTS, compile=compile, safe_mode=True)
    if spectral_mode is not None:
        set_spectral_mode(model, spectral_mode)
    return model
