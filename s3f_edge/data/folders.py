"""Class-per-subfolder datasets: DATA/train/<class>/..., optional DATA/test/<class>/..., or DATA/<class>/..."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3f_edge.data.preprocess import IMAGE_SUFFIXES, Preprocessing, try_load_image
from s3f_edge.errors import DatasetError
from s3f_edge.outputs import write_csv


@dataclass
class Split:
    """Files and integer labels of one split (sorted by path, so runs are reproducible)."""

    paths: list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self, class_names: list[str]) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(class_names)}

    def subset(self, indices) -> "Split":
        indices = np.asarray(indices, dtype=int)
        return Split([self.paths[i] for i in indices], self.labels[indices])


@dataclass
class FolderDataset:
    root: Path
    class_names: list[str]
    train: Split
    test: Split | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # files that are not images

    def file_list_hash(self) -> str:
        """sha256 over the relative paths and labels of every split: identifies the data used."""
        digest = hashlib.sha256()
        for name, split in (("train", self.train), ("test", self.test)):
            for path, label in zip(split.paths if split else [], split.labels if split else []):
                digest.update(f"{name}\t{path.relative_to(self.root).as_posix()}\t{label}\n".encode())
        return digest.hexdigest()


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_split(folder: Path, class_names: list[str], skipped: list) -> Split:
    paths, labels = [], []
    for index, name in enumerate(class_names):
        class_dir = folder / name
        found = 0
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file() or p.is_symlink()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(index)
                found += 1
            else:
                skipped.append((path, f"not an image file (suffix {path.suffix or 'none'!r})"))
        if found == 0:
            raise DatasetError(f"class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                               "remove it or add images")
    return Split(paths, np.asarray(labels, dtype=np.int64))


def discover(root: str | Path) -> FolderDataset:
    """Find classes and files; refuse layouts that cannot train a classifier, before any work.

    The layout is ``root/train/<class>/`` (with an optional ``root/test/<class>/``) or ``root/<class>/``. Class
    folders are searched recursively and hidden ones ignored; files without an image suffix are listed as skipped.

    Args:
        root: the dataset folder.

    Returns:
        The ``FolderDataset``: class names (sorted folder names), the train split, the test split (None without
        ``test/``) and the skipped files.

    Raises:
        DatasetError: no such folder, fewer than two classes, a class folder without images, or test classes that
            differ from train's.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    skipped: list[tuple[Path, str]] = []
    if (root / "train").is_dir():
        train_dir, test_dir = root / "train", (root / "test" if (root / "test").is_dir() else None)
    else:
        train_dir, test_dir = root, None
    class_names = [p.name for p in _class_folders(train_dir)]
    if len(class_names) < 2:
        raise DatasetError(
            f"{train_dir} must hold one sub-folder of images per class and at least two classes, but holds "
            f"{class_names or 'none'}; give a folder laid out as DATA/<class>/* or DATA/train/<class>/*"
        )
    train = _scan_split(train_dir, class_names, skipped)
    test = None
    if test_dir is not None:
        test_classes = [p.name for p in _class_folders(test_dir)]
        if test_classes != class_names:
            raise DatasetError(
                f"train and test classes differ: train has {class_names}, test has {test_classes}; "
                "make the class folders match"
            )
        test = _scan_split(test_dir, class_names, skipped)
    return FolderDataset(root, class_names, train, test, skipped)


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded, stratified (remaining, held_out) split; held_out gets ``fraction`` of each class.

    Args:
        split: the split to divide.
        fraction: the share held out, strictly between 0 and 1.
        seed: the split's random state (the same seed gives the same split).

    Returns:
        (remaining, held_out), each keeping the order of ``split``.

    Raises:
        DatasetError: ``fraction`` out of range, a class with fewer than 2 images, or a split that would leave
            either side without an image of every class.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"validation fraction must be between 0 and 1, got {fraction}")
    indices = np.arange(len(split))
    counts = np.bincount(split.labels)
    if counts[counts > 0].min() < 2:
        raise DatasetError("every class needs at least 2 training images to carve out a validation split")
    classes, total = int((counts > 0).sum()), len(split)

    def held(share: float) -> int:
        return int(np.ceil(share * total))  # as scikit-learn sizes a fractional test split

    if not classes <= held(fraction) <= total - classes:
        usable = [share / 100 for share in range(1, 100) if classes <= held(share / 100) <= total - classes]
        advice = (f"give --val-fraction between {usable[0]:.2f} and {usable[-1]:.2f}" if usable
                  else "add images (at least 2 per class)")
        raise DatasetError(
            f"a validation split of {fraction:g} of {total} training images holds {held(fraction)} and leaves "
            f"{total - held(fraction)}, but each side needs one image of each of the {classes} classes: {advice}")
    keep, held_out = train_test_split(indices, test_size=fraction, stratify=split.labels, random_state=seed)
    return split.subset(np.sort(keep)), split.subset(np.sort(held_out))


def decode_split(split: Split, contract: Preprocessing, workers: int = 4, progress: bool = False,
                 description: str = "decoding"):
    """Yield (path, label, image or None, error or None) for every file, in order, decoded in parallel
    (OpenCV releases the GIL)."""

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda path: try_load_image(path, contract), split.paths)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(split), desc=description, unit="img", leave=False)
        for path, label, (image, error) in zip(split.paths, split.labels, results):
            yield path, int(label), image, error


def load_split(
    split: Split, contract: Preprocessing, workers: int = 4, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
    """Decode and preprocess every file into memory, in parallel.

    Files that cannot be decoded are returned with the reason, never silently dropped.

    Args:
        split: the files and their labels.
        contract: the model's ``Preprocessing``.
        workers: decoding threads.
        progress: show a progress bar on stderr while decoding.

    Returns:
        (images (N, H, W, C) float32, labels (N,) int64, failures as (path, reason)), N counting the decoded
        files only, in the order of ``split``.
    """
    images, labels, failures = [], [], []
    for path, label, image, error in decode_split(split, contract, workers, progress):
        if error is None:
            images.append(image)
            labels.append(label)
        else:
            failures.append((path, error))
    shape = (0, *contract.input_shape)
    array = np.stack(images) if images else np.zeros(shape, np.float32)
    return array, np.asarray(labels, dtype=np.int64), failures


def write_skipped(path: Path, rows: list[tuple[Path, str]]) -> None:
    """The files a command could not use, with the reason (a spreadsheet-safe CSV: ``s3f_edge.outputs``)."""
    write_csv(path, ["path", "reason"], ({"path": str(p), "reason": reason} for p, reason in rows))
