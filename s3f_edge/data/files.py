"""Files on disk: listing image files and fingerprinting model files."""
from __future__ import annotations

import hashlib
from pathlib import Path

from s3f_edge.data.preprocess import IMAGE_SUFFIXES
from s3f_edge.errors import InputError


def image_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively, by suffix), sorted by path; the first ``limit`` of them."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files[:limit] if limit else files


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_images(folder: str | Path | None, option: str) -> None:
    """Refuse, before any work, a folder that holds no image file (searched recursively); None passes.

    Raises:
        InputError: no image under ``folder`` (the message names ``option``).
    """
    if folder is not None and not image_files(folder, limit=1):
        raise InputError(f"{option}: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}; give a folder of images")
