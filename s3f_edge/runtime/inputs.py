"""What ``infer`` reads: a folder's listing (every file, and the sub-folders that could not be listed) and each
file read for the model, with the fingerprint its row records."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3f_edge.data.preprocess import try_load_image
from s3f_edge.errors import InputError, MissingFileError
from s3f_edge.results import file_fingerprint


@dataclass
class Listing:
    """What ``list_inputs`` found: the files, and the sub-folders it could not list (each gets an error row)."""
    files: list[Path]
    unreadable: dict[Path, str] = field(default_factory=dict)  # sub-folder -> why it could not be listed


def list_inputs(folder: str | Path, recursive: bool = False) -> Listing:
    """Every file (and broken link) under ``folder``, sorted by path; hidden files and folders excluded.

    Args:
        folder: the folder to list.
        recursive: also list its sub-folders' files (not following links to folders); else only the files
            directly in it.

    Returns:
        The files, whatever their suffix, sorted by their path as text, and the sub-folders that could not be
        listed (no permission, gone meanwhile) with the reason, so that their files are never skipped silently.

    Raises:
        MissingFileError: ``folder`` is not a folder.
        InputError: ``folder`` itself cannot be listed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder")
    files, unreadable = [], {}

    def cannot_list(error: OSError) -> None:
        where = Path(error.filename) if error.filename else folder
        if where == folder:
            raise InputError(f"cannot list {folder}: {error.strerror or error}; check its permissions")
        unreadable[where] = error.strerror or str(error)

    for parent, folders, names in os.walk(folder, onerror=cannot_list):
        folders[:] = sorted(name for name in folders if not name.startswith(".")) if recursive else []
        for name in names:
            path = Path(parent) / name
            if not name.startswith(".") and (path.is_file() or (path.is_symlink() and not path.exists())):
                files.append(path)
    return Listing(sorted(files, key=lambda p: str(p)), unreadable)


def unreadable_folder_reason(why: str) -> str:
    """The reason of the error row of a sub-folder that could not be listed."""
    return (f"cannot list this folder ({why}): the files in it were not classified; make it readable and run the "
            "same command with --resume")


def same_file_key(path: str | Path) -> str:
    """One spelling per file for matching rows to files: absolute and normalised (links are not followed, so a
    link and its target stay two files, as the listing has them)."""
    return os.path.normpath(os.path.abspath(path))


@dataclass
class Decoded:
    """A file read for the model: its pixels, or the reason it has none, and the file as it was when read."""
    image: np.ndarray | None
    error: str | None
    fingerprint: dict  # size and modification time, taken before reading (results.file_fingerprint)


def decode_file(path: Path, contract) -> Decoded:
    """Read and preprocess one file; never raises for a bad file (the reason is in ``Decoded.error``)."""
    fingerprint = file_fingerprint(path)  # before reading: a file changed while read looks changed on --resume
    image, error = try_load_image(path, contract)
    return Decoded(image, error, fingerprint)
