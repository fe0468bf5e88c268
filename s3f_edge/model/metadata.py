"""Model metadata (class names, preprocessing contract, provenance) stored inside .keras files.

A .keras file is a zip; s3f-edge adds one member, ``s3f_edge.json``, which Keras ignores.
The runtime reads it so that a model always comes with its classes and its pixels contract.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from s3f_edge.errors import InputError
from s3f_edge.outputs import atomic_path

METADATA_MEMBER = "s3f_edge.json"


def package_versions(*packages: str) -> dict:
    """Versions of s3f-edge, Python and the named distributions (e.g. "tensorflow", "tf2onnx"), for provenance."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import s3f_edge

    found = {"s3f_edge": s3f_edge.__version__, "python": platform.python_version()}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # e.g. tensorflow-cpu installed instead of tensorflow
            module = __import__(name.replace("-", "_").replace("scikit_learn", "sklearn"))
            found[name] = getattr(module, "__version__", "unknown")
    return found


def add_metadata(keras_path: str | Path, metadata: dict) -> None:
    with zipfile.ZipFile(keras_path, "a") as archive:
        if METADATA_MEMBER in archive.namelist():
            raise ValueError(f"{keras_path} already holds s3f-edge metadata")
        archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, sort_keys=True))


KERAS_MEMBERS = ("config.json", "model.weights.h5")  # what every Keras 3 .keras archive holds


def _not_a_keras_file(path: str | Path, reason: str) -> InputError:
    return InputError(f"{path} is not a Keras model file ({reason}); "
                      "give a .keras file saved by s3f-edge train or Keras")


def check_keras_archive(keras_path: str | Path) -> None:
    """Raise InputError unless ``keras_path`` is a zip archive holding a Keras model's members (checked without
    Keras, so that a text file named .keras is one clear error instead of a loader's traceback)."""
    if not zipfile.is_zipfile(keras_path):
        raise _not_a_keras_file(keras_path, "a .keras file is a zip archive; this one is not")
    try:
        with zipfile.ZipFile(keras_path) as archive:
            absent = [name for name in KERAS_MEMBERS if name not in archive.namelist()]
    except zipfile.BadZipFile as error:
        raise _not_a_keras_file(keras_path, str(error)) from None
    if absent:
        raise _not_a_keras_file(keras_path, f"the archive lacks {', '.join(absent)}")


def read_metadata(keras_path: str | Path) -> dict | None:
    """The s3f-edge metadata of a .keras file, or None when it has none (e.g. the original release).

    Raises:
        InputError: the file is not a Keras model archive, or its metadata is not JSON.
    """
    check_keras_archive(keras_path)
    with zipfile.ZipFile(keras_path) as archive:
        if METADATA_MEMBER not in archive.namelist():
            return None
        try:
            return json.loads(archive.read(METADATA_MEMBER))
        except ValueError as error:
            raise _not_a_keras_file(keras_path, f"its {METADATA_MEMBER} is not JSON: {error}") from None


def save_model_atomically(model, path: str | Path, metadata: dict | None = None) -> None:
    """Save to a temporary file beside ``path`` and rename it into place.

    A kill or a full disk mid-save leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".keras") as temporary:  # Keras saves only to a name ending in .keras
        model.save(temporary)
        if metadata is not None:
            add_metadata(temporary, metadata)
