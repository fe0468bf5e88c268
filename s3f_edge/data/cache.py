"""A disk cache of decoded, preprocessed images.

Decoding is paid once per (file list, preprocessing contract): later runs, resumed runs and other
workers on the same host reuse the cache, and training reads batches from a memory-mapped file, so a
dataset larger than RAM can be trained on. Files are written under temporary names and renamed, and
the index (written last) is what marks a cache complete, so a killed run never leaves a cache that
looks valid.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from s3f_edge.data.folders import Split, decode_split
from s3f_edge.data.preprocess import Preprocessing

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """$S3F_EDGE_CACHE, else ~/.cache/s3f-edge/decoded."""
    return Path(os.environ.get("S3F_EDGE_CACHE") or Path.home() / ".cache" / "s3f-edge" / "decoded")


def cache_key(split: Split, contract: Preprocessing) -> str:
    """Changes when any file is added, removed, relabelled or modified, or the contract changes."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{contract.to_json()}\n".encode())
    for path, label in zip(split.paths, split.labels):
        stat = path.stat()
        digest.update(f"{path.resolve()}\t{int(label)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_split_cached(split: Split, contract: Preprocessing, cache_dir: str | Path, workers: int = 4,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
    """Like ``load_split``, but the images come back as a read-only memory map of a file in ``cache_dir``."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(split, contract)
    images_path, index_path = cache_dir / f"{key}.images.npy", cache_dir / f"{key}.json"
    if not (index_path.exists() and images_path.exists()):
        _build(split, contract, images_path, index_path, workers, progress)
    index = json.loads(index_path.read_text())
    images = np.load(images_path, mmap_mode="r")[: index["count"]]
    labels = np.asarray(index["labels"], dtype=np.int64)
    failures = [(Path(path), reason) for path, reason in index["failures"]]
    return images, labels, failures


def _build(split: Split, contract: Preprocessing, images_path: Path, index_path: Path, workers: int,
           progress: bool) -> None:
    temporary = images_path.with_name(f"{images_path.stem}.{os.getpid()}.tmp.npy")
    images = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32,
                                       shape=(max(len(split), 1), *contract.input_shape))
    labels, failures = [], []
    for path, label, image, error in decode_split(split, contract, workers, progress, "decoding to disk cache"):
        if error is None:
            images[len(labels)] = image
            labels.append(label)
        else:
            failures.append((str(path), error))
    images.flush()
    del images
    os.replace(temporary, images_path)
    index = {"format": CACHE_FORMAT, "count": len(labels), "labels": labels, "failures": failures,
             "preprocessing": contract.to_dict(), "files": len(split)}
    temporary_index = index_path.with_name(f"{index_path.name}.{os.getpid()}.tmp")
    temporary_index.write_text(json.dumps(index))
    os.replace(temporary_index, index_path)
