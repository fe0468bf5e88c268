"""``s3f-edge fft-check`` as one function: the SpectralFilter's FFT and DFT-as-matmul forms against float64 numpy,
on real images at several sizes."""
from __future__ import annotations

from pathlib import Path


def check_forms(images: str | Path, sizes: list[tuple[int, int]], filters: int = 32,
                limit: int = 4) -> list[dict]:
    """The relative L2 error of each form at each size, on the same images.

    Args:
        images: an image file, or a folder searched recursively.
        sizes: (height, width) to check.
        filters: the SpectralFilter's filters.
        limit: images to use at most.

    Returns:
        One dict per size: ``height``, ``width``, ``images`` and the errors ``fft`` and ``matmul``.

    Raises:
        InputError: no image under ``images``.
        MissingDependencyError: no Keras or TensorFlow (the ``train`` extra).
    """
    import numpy as np

    from s3f_edge.data.files import image_files
    from s3f_edge.data.preprocess import IMAGE_SUFFIXES, Preprocessing, load_image
    from s3f_edge.dependencies import require
    from s3f_edge.errors import InputError

    require("the FFT check", "train", "tensorflow", "keras")
    from s3f_edge.model.fft_check import compare_forms

    images = Path(images)
    files = [images] if images.is_file() else image_files(images, limit)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {images}; give an image or a folder of images")
    found = []
    for height, width in sizes:
        batch = np.stack([load_image(p, Preprocessing(height=height, width=width, channels=1)) for p in files])
        errors = compare_forms(batch, filters)
        found.append({"height": height, "width": width, "images": len(files), **errors})
    return found
