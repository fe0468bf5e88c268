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
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from s3f_edge.errors import OutputError, OutputExistsError

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def ensure_writable(path: str | Path, option: str, *, folder: bool = False) -> None:
    """Raise OutputError (naming ``option``) unless ``path`` can be written: a file, or a folder if ``folder``.

    Missing parent folders are created to try, then removed again: nothing is left behind.
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


def claim_outputs(found: Iterable[Path], *, overwrite: bool, option: str = "--out", instead: str = "") -> list[Path]:
    """Apply the rule to the command's own earlier outputs in ``found``: refuse (OutputExistsError) unless
    ``overwrite``, then remove them. Returns what was removed.

    Args:
        found: paths the command would write; those that exist are its earlier results.
        overwrite: the user's ``--overwrite``.
        option: the option that chose the location, named in the message.
        instead: another way out to suggest, e.g. "--resume to continue them".
    """
    found = sorted({Path(p) for p in found if Path(p).exists() or Path(p).is_symlink()})
    if not found:
        return []
    if not overwrite:
        names = ", ".join(str(p) for p in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise OutputExistsError(f"earlier results exist: {names}; pass {instead + ', ' if instead else ''}"
                                f"--overwrite to replace them, or choose another {option}")
    for path in found:
        path.unlink()
    return found


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on a clean exit it is synced and renamed over ``path``
    with the umask's permissions; on an error it is removed and ``path`` is untouched."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~current_umask())
        with os.fdopen(handle, mode, **kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


def spreadsheet_safe(value):
    """``value`` as written to a CSV cell: text that a spreadsheet would run as a formula gets a leading quote
    (as does text that already starts with one, so that ``from_spreadsheet`` can undo it exactly)."""
    if isinstance(value, str) and value[:1] in (*FORMULA_STARTS, _QUOTE):
        return _QUOTE + value
    return value


def from_spreadsheet(text: str) -> str:
    """The value ``spreadsheet_safe`` was given, from the cell it wrote."""
    if text[:1] == _QUOTE and text[1:2] in (*FORMULA_STARTS, _QUOTE):
        return text[1:]
    return text


def write_csv(path: str | Path, columns: list[str], rows: Iterable[dict]) -> None:
    """Rows (dicts; keys outside ``columns`` ignored) to a CSV file, atomically, every cell spreadsheet-safe."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({key: spreadsheet_safe(value) for key, value in row.items()} for row in rows)


def read_csv(path: str | Path) -> list[dict]:
    """The rows ``write_csv`` wrote, with every cell as it was given (as text)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: from_spreadsheet(value) if isinstance(value, str) else value for key, value in row.items()}
                for row in csv.DictReader(handle)]
