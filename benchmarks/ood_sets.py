"""Image folders for measuring out-of-distribution refusal, written from sources any machine can install.

None of them is ever used to fit a score or choose a threshold: they only measure.

- ``other-modalities``: random crops of medical images of modalities the project does not ship (retinal
  fundus, histology, fluorescence microscopy, a CT phantom, from scikit-image; CT, ultrasound and nuclear
  medicine DICOM files from pydicom's test data) and of natural photographs and documents (scikit-image).
- ``corrupted-brain``: brain MRI test images with Gaussian noise, blur or low contrast (report only: they are
  still brain MRI, and whether a model should refuse them is a judgement, not a goal).

Usage: python benchmarks/ood_sets.py OUT [--brain-test DIR] [--crops 24]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

# scikit-image's bundled images (no download), by kind
SKIMAGE_MEDICAL = {"retina": "fundus photograph", "microaneurysms": "fundus (retinal detail)",
                   "immunohistochemistry": "histology", "cell": "microscopy", "shepp_logan_phantom": "CT phantom"}
SKIMAGE_OTHER = {"astronaut": "photograph", "camera": "photograph", "cat": "photograph", "chelsea": "photograph",
                 "coffee": "photograph", "rocket": "photograph", "horse": "silhouette", "clock": "photograph",
                 "coins": "photograph", "moon": "photograph", "hubble_deep_field": "astronomy", "page": "document",
                 "text": "document", "brick": "texture", "grass": "texture", "gravel": "texture"}
# pydicom's test files that hold pixels decodable without extra codecs, by modality
PYDICOM_FILES = {"CT_small.dcm": "CT", "examples_rgb_color.dcm": "ultrasound", "examples_ybr_color.dcm": "ultrasound",
                 "examples_palette.dcm": "ultrasound"}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any pixel array as 8-bit, stretched to its own range (as a viewer's default window would show it)."""
    image = np.asarray(image, np.float64)
    low, high = np.percentile(image, [0.5, 99.5])
    return np.clip((image - low) / max(high - low, 1e-9) * 255, 0, 255).astype(np.uint8)


def sources() -> dict[str, tuple[str, np.ndarray]]:
    """name -> (kind, 8-bit image) of every source that can be read here."""
    import skimage.data

    found = {}
    for name, kind in {**SKIMAGE_MEDICAL, **SKIMAGE_OTHER}.items():
        image = getattr(skimage.data, name)()
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        found[f"skimage-{name}"] = (kind, to_uint8(image))
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError:
        return found
    for name, kind in PYDICOM_FILES.items():
        try:
            path = get_testdata_file(name)
            dataset = pydicom.dcmread(path)
            pixels = dataset.pixel_array
            if getattr(dataset, "PhotometricInterpretation", "") == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                pixels = apply_color_lut(pixels, dataset)
            if pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
                pixels = pixels[0]  # first frame
        except Exception as error:  # a file this pydicom cannot decode here: leave it out, say so
            print(f"skipped {name}: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        found[f"dicom-{Path(name).stem}"] = (kind, to_uint8(pixels))
    return found


def random_crops(image: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The whole image, then ``count - 1`` random square crops of 35-100 % of its shorter side."""
    crops = [image]
    height, width = image.shape[:2]
    for _ in range(count - 1):
        side = int(min(height, width) * rng.uniform(0.35, 1.0))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crops.append(image[top:top + side, left:left + side])
    return crops


def write_other_modalities(out: Path, crops: int, seed: int = 0) -> dict[str, int]:
    """OUT/<source>/<n>.png for every source; returns images written per source."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, (_, image) in sorted(sources().items()):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for index, crop in enumerate(random_crops(image, crops, rng)):
            bgr = crop[..., ::-1] if crop.ndim == 3 else crop
            cv2.imwrite(str(folder / f"{index:03d}.png"), np.ascontiguousarray(bgr))
        written[name] = crops
    return written


CORRUPTIONS = ("noise", "blur", "low-contrast")


def corrupt(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), 3)
    return (128 + (image.astype(np.float64) - 128) * 0.3).astype(np.uint8)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def write_corrupted(brain_test: Path, out: Path, per_class: int = 50, seed: int = 0) -> dict[str, int]:
    """OUT/<corruption>/<class>_<file>.png from ``per_class`` images of each class of ``brain_test``."""
    rng = np.random.default_rng(seed)
    written = {}
    for kind in CORRUPTIONS:
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        count = 0
        for class_dir in sorted(p for p in brain_test.iterdir() if p.is_dir()):
            for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:per_class]:
                image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                cv2.imwrite(str(folder / f"{class_dir.name}_{path.stem}.png"), corrupt(image, kind, rng))
                count += 1
        written[kind] = count
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--brain-test", type=Path, default=None, help="brain MRI test folder for the corrupted set")
    parser.add_argument("--crops", type=int, default=24, help="images per source (the whole image, then crops)")
    args = parser.parse_args()
    print(write_other_modalities(args.out / "other-modalities", args.crops))
    if args.brain_test:
        print(write_corrupted(args.brain_test, args.out / "corrupted-brain"))


if __name__ == "__main__":
    main()
