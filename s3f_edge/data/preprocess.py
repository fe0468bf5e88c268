"""The preprocessing contract: the one place where file bytes become model pixels.

Training, evaluation, export metadata and the runtime all call this module, and a model
carries its ``Preprocessing`` in its metadata, so a deployed model sees exactly the pixels
it was trained on. Steps: decode with OpenCV (any bit depth, keeping alpha and palette
information), convert to the model's channel count, resize with INTER_AREA straight to the
input size (no crop, no pad, as the original), scale by the type's maximum to float32 [0, 1].
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

# Decoding more than this many pixels would risk memory on an edge box; a 12k x 12k scan is refused.
# OpenCV enforces the same limit inside every decoder when this is set before it loads.
MAX_PIXELS = 100_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from s3f_edge.errors import ImageDecodeError, InputError  # noqa: E402

CONTRACT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}



@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: (height, width, channels), how to resize, how to scale."""

    height: int
    width: int
    channels: int
    interpolation: str = "area"
    scale: str = "dtype_max"  # divide by 255 for 8-bit data, 65535 for 16-bit
    channel_order: str = "rgb"  # for 3-channel models; grayscale models use OpenCV's BGR2GRAY
    version: int = CONTRACT_VERSION

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise InputError(f"models take 1 (grayscale) or 3 (RGB) channels, not {self.channels}")
        if self.interpolation not in _INTERPOLATIONS:
            raise InputError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")
        if self.scale != "dtype_max" or self.channel_order != "rgb":
            raise InputError(f"unsupported preprocessing contract: scale={self.scale}, order={self.channel_order}")
        if self.version > CONTRACT_VERSION:
            raise InputError(
                f"this model's preprocessing contract is version {self.version}; this s3f-edge knows "
                f"up to {CONTRACT_VERSION}. Upgrade s3f-edge to run it."
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def decode_image(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file (or its bytes) with OpenCV, unchanged: uint8/uint16, 1, 3 or 4 channels (BGR[A]).

    A DICOM file (``DICM`` at byte 128) goes to ``decode_dicom`` instead.

    Args:
        source: a file path, or the file's bytes.
        max_pixels: refuse an image whose header (PNG, BMP, DICOM) declares more pixels, before decoding it;
            OpenCV's own limit, ``MAX_PIXELS``, applies to every format as well.

    Returns:
        (H, W) grayscale or (H, W, 3|4) BGR[A] pixels, uint8 or uint16 (float32 from a float file or DICOM).

    Raises:
        ImageDecodeError: the file cannot be read, is empty, corrupt or too large, or has an unsupported pixel type.
    """
    if isinstance(source, (bytes, bytearray)):
        data = np.frombuffer(source, dtype=np.uint8)
    else:
        try:
            # np.fromfile + imdecode reads unicode paths that cv2.imread cannot.
            data = np.fromfile(str(source), dtype=np.uint8)
        except OSError as error:
            raise ImageDecodeError(f"cannot read file: {error.strerror or error}") from error
    if data.size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    if data[128:132].tobytes() == b"DICM":
        return decode_dicom(data.tobytes(), max_pixels)
    _check_declared_size(data, max_pixels)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageDecodeError("not a decodable image (corrupt, truncated or unsupported format)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageDecodeError(f"unsupported pixel type {image.dtype}")
    return image


def decode_dicom(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A single-frame DICOM image as float32 in [0, 1] (grayscale) or uint8 BGR (colour).

    Grayscale follows the standard's display pipeline through pydicom's own implementation: the
    modality LUT (Modality LUT Sequence or rescale slope/intercept), then the VOI LUT (VOI LUT
    Sequence, else the first Window Center/Width with its VOILUTFunction: LINEAR, LINEAR_EXACT or
    SIGMOID), scaled by that step's output range; without a VOI LUT, the image's own min-max. A
    MONOCHROME1 image is inverted last, so that bright means dense, as in MONOCHROME2.

    Args:
        data: the whole DICOM file's bytes.
        max_pixels: refuse an image of more pixels (rows x columns) than this.

    Returns:
        (H, W) float32 in [0, 1] for a grayscale image, or (H, W, 3) uint8 BGR for an RGB one.

    Raises:
        ImageDecodeError: pydicom is not installed, or the image is too large, multi-frame, in an unsupported colour
            space or unreadable.
    """
    import io

    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as error:
        raise ImageDecodeError("DICOM file, but pydicom is not installed: pip install 's3f-edge[dicom]'") from error
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        if rows * columns > max_pixels:
            raise ImageDecodeError(f"image of {columns}x{rows} pixels exceeds the limit of {max_pixels:,}")
        if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
            raise ImageDecodeError("multi-frame DICOM is not supported; export the frame to classify")
        pixels = dataset.pixel_array
        photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
        if pixels.ndim == 3:
            if photometric != "RGB":
                raise ImageDecodeError(f"unsupported DICOM colour space {photometric}")
            return cv2.cvtColor(pixels.astype(np.uint8), cv2.COLOR_RGB2BGR)
        values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
        low, high = _voi_output_range(dataset)
        if low is None:
            displayed, low, high = values, float(values.min()), float(values.max())
        else:
            # A VOI LUT Sequence is a table indexed by the modality output: hand integral values over as
            # integers (pydicom warns on float input, which only a fractional rescale makes necessary).
            lut_input = values.astype(np.int64) if np.array_equal(values, np.round(values)) else values
            displayed = np.asarray(apply_voi_lut(lut_input, dataset, index=0, prefer_lut=True), dtype=np.float64)
    except ImageDecodeError:
        raise
    except Exception as error:  # pydicom raises many types for broken or compressed-without-codec files
        raise ImageDecodeError(f"unreadable DICOM: {error}") from error
    scaled = np.clip((displayed - low) / max(high - low, 1e-12), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled.astype(np.float32)


def _voi_output_range(dataset) -> tuple[float | None, float | None]:
    """The output range of the VOI LUT that ``apply_voi_lut`` applies, or (None, None) when there is none.

    A VOI LUT Sequence outputs [0, 2^bits - 1] (bits from its LUT Descriptor); windowing outputs the
    range pydicom derives from the stored bits and the rescale, read off by windowing two extremes.
    """
    from pydicom.pixels import apply_voi_lut

    sequence = dataset.get("VOILUTSequence")
    if sequence and sequence[0].get("LUTDescriptor") is not None and sequence[0].get("LUTData") is not None:
        return 0.0, float(2 ** int(sequence[0].LUTDescriptor[2]) - 1)
    if dataset.get("WindowCenter") is None or dataset.get("WindowWidth") is None:
        return None, None
    with np.errstate(over="ignore"):
        low, high = apply_voi_lut(np.array([-1e12, 1e12]), dataset, index=0, prefer_lut=True)
    return float(low), float(high)


def _check_declared_size(data: np.ndarray, max_pixels: int) -> None:
    """Refuse images whose header declares more than ``max_pixels`` before decoding them."""
    header = data[:32].tobytes()
    width = height = None
    if header.startswith(b"\x89PNG\r\n\x1a\n") and len(header) >= 24:
        width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    elif header.startswith(b"BM") and len(header) >= 26:
        width = abs(int.from_bytes(header[18:22], "little", signed=True))
        height = abs(int.from_bytes(header[22:26], "little", signed=True))
    if width is not None and width * height > max_pixels:
        raise ImageDecodeError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels:,}")


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grayscale, BGR or BGRA (as OpenCV decodes) to 1 channel (gray) or 3 channels (RGB)."""
    if image.ndim == 2:
        gray_or_rgb = image if channels == 1 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        # Alpha is dropped: medical images carry no meaningful transparency.
        code = cv2.COLOR_BGRA2GRAY if channels == 1 else cv2.COLOR_BGRA2RGB
        gray_or_rgb = cv2.cvtColor(image, code)
    elif image.shape[2] == 3:
        code = cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB
        gray_or_rgb = cv2.cvtColor(image, code)
    else:
        raise ImageDecodeError(f"cannot convert an image with {image.shape[2]} channels")
    return gray_or_rgb


def scale_to_unit(image: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1]: integers divided by their type's maximum, floats clipped."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def preprocess_array(image: np.ndarray, contract: Preprocessing) -> np.ndarray:
    """Decoded image -> float32 (H, W, C) in [0, 1], per ``contract``.

    Args:
        image: pixels as ``decode_image`` gives them: (H, W) or (H, W, 3|4) BGR[A], uint8, uint16 or float.
        contract: the model's ``Preprocessing`` (size, channels, interpolation).

    Returns:
        A contiguous float32 array (height, width, channels) of the contract: integer pixels divided by their
        type's maximum, float pixels clipped to [0, 1].

    Raises:
        ImageDecodeError: an image with a channel count other than 1, 3 or 4.
    """
    converted = to_channels(image, contract.channels)
    if converted.shape[:2] != (contract.height, contract.width):
        # Resize before scaling: INTER_AREA on integers matches the original notebooks.
        converted = cv2.resize(
            converted, (contract.width, contract.height), interpolation=_INTERPOLATIONS[contract.interpolation]
        )
    scaled = scale_to_unit(converted)
    if scaled.ndim == 2:
        scaled = scaled[:, :, None]
    return np.ascontiguousarray(scaled)


def load_image(source: str | Path | bytes, contract: Preprocessing) -> np.ndarray:
    """Read one file and apply the contract: the function every s3f-edge path uses.

    Args:
        source: a file path, or the file's bytes.
        contract: the model's ``Preprocessing``.

    Returns:
        float32 (H, W, C) pixels in [0, 1] (``preprocess_array``).

    Raises:
        ImageDecodeError: the file cannot be read or decoded into the contract's pixels.
    """
    return preprocess_array(decode_image(source), contract)


def try_load_image(path: str | Path, contract: Preprocessing) -> tuple[np.ndarray | None, str | None]:
    """``load_image`` for a file that may be anything: never raises for a bad file.

    Args:
        path: the file.
        contract: the model's ``Preprocessing``.

    Returns:
        (pixels, None), or (None, why the file has none: an unsupported suffix, an undecodable or unreadable file).
    """
    suffix = Path(path).suffix
    if suffix.lower() not in IMAGE_SUFFIXES:
        return None, f"unsupported format {suffix or '(no suffix)'!r}; supported: {', '.join(IMAGE_SUFFIXES)}"
    try:
        return load_image(path, contract), None
    except ImageDecodeError as error:
        return None, str(error)
    except (OSError, MemoryError, ValueError) as error:  # one file never stops a run over many
        return None, f"{type(error).__name__}: {error}"
