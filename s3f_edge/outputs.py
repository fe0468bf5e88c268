"""What every command does with the files it writes: one rule, in one place.

- **Never replace earlier results unless told to.** A command that finds its own outputs where it would
  write refuses, and names ``--overwrite``; with it, those outputs (and only files the command itself
  writes) are removed first, so a folder never mixes the results of two runs.
- **Fail before the work, not after it.** ``ensure_writable`` proves an output location can be written
  (it creates what is missing, writes a probe file, and removes both at once), so an unwritable
  ``--out`` is one line at the start instead of a traceback after minutes of work.
- **Write atomically, readable by others.** A file is written beside its target and renamed into place
  (a crash never leaves half a file), with the permissions the umask gives (mkstemp's 0600 would hide
  results from the service or colleague who reads them).
- **CSV cells are safe to open in a spreadsheet.** A cell that starts with ``= + - @``, a tab or a
  carriage return would run as a formula (OWASP, "CSV injection"); it is written with a leading ``'``,
  and reading the file back removes it, so the values round-trip exactly.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from s3f_edge.errors import OutputError, OutputExistsError

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def ensure_writable(path: str | Path, option: str, *, folder: bool = False) -> None:
    """Prove that ``path`` can be written, before any long work; nothing is left behind.

    Missing parent folders are created to try, a probe file is written and removed, then the folders
    created are removed again.

    Args:
        path: the output file, or the output folder when ``folder``.
        option: the option that chose it (e.g. "--out"), named in the message.
        folder: whether ``path`` is a folder the command writes into.

    Raises:
        OutputError: the location cannot be written (the message names it and says what to do).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a folder; give a folder to write into")
    if not folder and path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name, e.g. {path / 'results.csv'}")
    target = path if folder else path.parent
    missing = []
    probe = target
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    created: list[Path] = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
        handle, name = tempfile.mkstemp(prefix=".s3f-edge-probe-", dir=target)
        os.close(handle)
        os.unlink(name)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputError(f"cannot write {option} {path}: {reason}; choose a location you can write to") from None
    finally:
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass


def refuse_existing(found: Iterable[Path], *, overwrite: bool, option: str = "--out", instead: str = "") -> list[Path]:
    """Apply the rule to the command's own earlier outputs: refuse them unless ``overwrite``.

    Args:
        found: paths the command would write; those that exist are its earlier results.
        overwrite: the user's ``--overwrite``.
        option: the option that chose the location, named in the message.
        instead: another way out to suggest, e.g. "--resume to continue them".

    Returns:
        The earlier results that exist (to be replaced: a file written atomically replaces its old self at
        the end, so a failed run loses nothing; see ``remove_outputs`` for folders of several files).

    Raises:
        OutputExistsError: some exist and ``overwrite`` is false.
    """
    found = sorted({Path(p) for p in found if Path(p).exists() or Path(p).is_symlink()})
    if found and not overwrite:
        names = ", ".join(str(p) for p in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise OutputExistsError(f"earlier results exist: {names}; pass {instead + ', ' if instead else ''}"
                                f"--overwrite to replace them, or choose another {option}")
    return found


def check_outputs(paths: Iterable[tuple[Path | None, str]], overwrite: bool) -> None:
    """The rule for a command's single-file outputs, before any work: each writable, and none an earlier result
    unless ``overwrite`` (the new file replaces it when written, so a failed run loses nothing).

    Args:
        paths: (path, the option that named it) pairs; a None path is skipped.
        overwrite: the user's ``--overwrite``.
    """
    for path, option in paths:
        if path is not None:
            ensure_writable(path, option)
            refuse_existing([path], overwrite=overwrite, option=option)


def remove_outputs(paths: Iterable[Path]) -> None:
    """Remove earlier outputs before writing new ones where they must not mix (a run directory, an export folder).

    Raises:
        OutputError: one cannot be removed.
    """
    for path in paths:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as error:
            raise OutputError(f"cannot remove the earlier result {path}: {error.strerror or error}; remove it "
                              "yourself or choose another output") from None


def claim_outputs(found: Iterable[Path], *, overwrite: bool, option: str = "--out", instead: str = "") -> list[Path]:
    """``refuse_existing``, then ``remove_outputs``: for outputs of several files that must never mix two runs.

    Returns:
        What was removed.
    """
    earlier = refuse_existing(found, overwrite=overwrite, option=option, instead=instead)
    remove_outputs(earlier)
    return earlier


def _umask_now() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)  # elsewhere: set and restore at once (not thread-safe, but brief)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions a new file gets from the umask (0644 under the usual 022), which mkstemp's 0600 would not."""
    return 0o666 & ~_umask_now()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file beside ``path`` for writing.

    On a clean exit the file is synced and renamed over ``path`` with ``file_mode()``'s permissions; on an
    error it is removed and ``path`` is untouched.

    Args:
        path: the file to write.
        mode, kwargs: as for ``open`` (a write mode).

    Yields:
        The open temporary file.
    """
    with _replacing(path) as (handle, _):
        with os.fdopen(handle, mode, **kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a file name (e.g. Keras's ``model.save``).

    The same rule as ``atomic_open``: on a clean exit the file is synced and renamed over ``path`` with
    ``file_mode()``'s permissions; on an error it is removed and ``path`` is untouched.

    Args:
        path: the file to write.
        suffix: the temporary name's ending, for writers that insist on one (Keras: ``".keras"``).

    Yields:
        The temporary file's path (the file exists, empty).
    """
    with _replacing(path, suffix) as (handle, temporary):
        os.close(handle)
        yield Path(temporary)
        with open(temporary, "rb") as written:  # the writer closed it; sync before the rename makes it visible
            os.fsync(written.fileno())


@contextmanager
def _replacing(path: str | Path, suffix: str = "") -> Iterator[tuple[int, str]]:
    """(open descriptor, name) of a new temporary file beside ``path`` with the umask's permissions; renamed over
    ``path`` on a clean exit, removed on an error. The one implementation of the atomic-write rule."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", suffix=suffix, dir=path.parent)
    try:
        os.chmod(temporary, file_mode())  # mkstemp's 0600 would hide results from the user's group
        yield handle, temporary
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic_open``)."""
    with atomic_open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


def write_json(path: str | Path, data) -> None:
    """``data`` as indented JSON (UTF-8, a final newline), written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def spreadsheet_safe(value: object) -> object:
    """A CSV cell's value as written: text a spreadsheet would run as a formula gets a leading quote (as does text
    that already starts with one, so that ``from_spreadsheet`` undoes it exactly); other values are unchanged."""
    if isinstance(value, str) and value[:1] in (*FORMULA_STARTS, _QUOTE):
        return _QUOTE + value
    return value


def from_spreadsheet(text: str) -> str:
    """The value ``spreadsheet_safe`` was given, from the cell it wrote."""
    if text[:1] == _QUOTE and text[1:2] in (*FORMULA_STARTS, _QUOTE):
        return text[1:]
    return text


def write_csv(path: str | Path, columns: list[str], rows: Iterable[dict]) -> None:
    """Write rows to a CSV file atomically, every cell spreadsheet-safe.

    Args:
        path: the file to write.
        columns: the header, in order; keys of a row outside it are ignored.
        rows: one dict per row.
    """
    # surrogateescape: a file name that is not valid UTF-8 is written as its bytes, and read back as written.
    with atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({key: spreadsheet_safe(value) for key, value in row.items()} for row in rows)


def read_csv(path: str | Path) -> list[dict]:
    """The rows ``write_csv`` wrote, each cell as it was given (as text).

    Returns:
        One dict per row, keyed by the header.
    """
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return [{key: from_spreadsheet(value) if isinstance(value, str) else value for key, value in row.items()}
                for row in csv.DictReader(handle)]
