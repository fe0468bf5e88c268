"""Small JPEG thumbnails as data URIs, so that a review page carries its images inside itself."""
from __future__ import annotations

import base64
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from s3f_edge.data.preprocess import decode_image, scale_to_unit, to_channels
from s3f_edge.errors import ImageDecodeError

DEFAULT_SIZE = 96  # pixels on the longer side: ~3 KB per image, so 10,000 rows stay a ~30 MB page
JPEG_QUALITY = 80


def data_uri(pixels: np.ndarray, size: int = DEFAULT_SIZE) -> str:
    """Pixels as a JPEG data URI no larger than ``size`` on its longer side.

    Args:
        pixels: (H, W) grayscale or (H, W, 3|4) BGR[A], uint8, uint16 or float in [0, 1] (as ``decode_image`` gives).
        size: the longer side of the thumbnail, in pixels; a smaller image is not enlarged.

    Returns:
        ``data:image/jpeg;base64,...``.
    """
    rgb = to_channels(pixels, 3)
    height, width = rgb.shape[:2]
    scale = min(1.0, size / max(height, width))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    display = (scale_to_unit(rgb) * 255.0 + 0.5).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(display, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ImageDecodeError("cannot encode a thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


@dataclass(frozen=True)
class Thumbnail:
    """A file's picture for a page, or why there is none.

    Attributes:
        uri: the data URI (``data_uri``), or None.
        problem: why there is no picture (None when there is one): not found, unreadable, not an image.
    """

    uri: str | None
    problem: str | None = None


def _read_bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def read_thumbnail(path: str | Path, size: int = DEFAULT_SIZE) -> Thumbnail:
    """A file's thumbnail, or the reason it has none (one line a reviewer can act on).

    Args:
        path: the image file.
        size: the longer side of the thumbnail, in pixels.

    Returns:
        The ``Thumbnail``: its ``uri``, or its ``problem``: "not found (deleted, moved or renamed)", "unreadable:
        permission denied", "a folder, not an image file", "not an image or corrupt: <the decoder's reason>".
    """
    try:
        data = _read_bytes(path)
    except FileNotFoundError:
        return Thumbnail(None, "not found (deleted, moved or renamed)")
    except IsADirectoryError:
        return Thumbnail(None, "a folder, not an image file")
    except PermissionError:
        return Thumbnail(None, "unreadable: permission denied")
    except OSError as error:
        return Thumbnail(None, f"unreadable: {error.strerror or error}")
    except ValueError as error:  # a path the system cannot name (an embedded NUL)
        return Thumbnail(None, f"unreadable: {error}")
    try:
        return Thumbnail(data_uri(decode_image(data), size))
    except ImageDecodeError as error:
        return Thumbnail(None, f"not an image or corrupt: {_one_line(error)}")
    except (ValueError, cv2.error) as error:
        return Thumbnail(None, f"not an image or corrupt: {type(error).__name__}: {_one_line(error)}")
    except MemoryError:
        return Thumbnail(None, "too large to show")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def file_thumbnail(path: str | Path, size: int = DEFAULT_SIZE) -> str | None:
    """A file's thumbnail (``data_uri``), or None when the file cannot be read as an image."""
    return read_thumbnail(path, size).uri


def read_thumbnails(paths: Iterable[str | Path], size: int = DEFAULT_SIZE, workers: int = 4,
                    progress: bool = False, description: str = "thumbnails") -> list[Thumbnail]:
    """``read_thumbnail`` of every path, in order, decoded in parallel (OpenCV releases the GIL).

    Args:
        paths: the image files.
        size: the longer side of each thumbnail, in pixels.
        workers: decoding threads.
        progress: show a progress bar on stderr.
        description: the progress bar's label.

    Returns:
        One ``Thumbnail`` per path.
    """
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda p: read_thumbnail(p, size), paths)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc=description, unit="img", leave=False, dynamic_ncols=True)
        return list(results)


def file_thumbnails(paths: Iterable[str | Path], size: int = DEFAULT_SIZE, workers: int = 4,
                    progress: bool = False, description: str = "thumbnails") -> list[str | None]:
    """``file_thumbnail`` of every path, in order: ``read_thumbnails`` (same arguments) without the reasons.

    Returns:
        One data URI (or None for an unreadable file) per path.
    """
    return [thumbnail.uri for thumbnail in read_thumbnails(paths, size, workers, progress, description)]
