"""The results of ``infer``: the row schema, results files (CSV, JSONL, JSON) and the journal.

Every row names one file and says what became of it: ``ok`` (a class), ``refused`` (unlike the training
images: probabilities kept for audit, no class) or ``error`` (no answer, with the reason). A row also records
the file as it was answered (size and modification time), so that a resumed run answers a changed file
again and a review page can tell that an image changed after its answer.

The journal beside an output (``.<name>.partial.jsonl``) receives rows as they are answered; its first line
describes the run (``JOURNAL_KEY``), in particular whether the run replaces an earlier output (``--overwrite``),
whose rows must then never be kept by a ``--resume``.

Reading is strict: a file that is not an s3f-edge results file raises ``InputError`` with the line at fault;
only a journal's last line may be torn (the process died while writing it).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

from s3f_edge.contract import OOD_SCORE
from s3f_edge.errors import InputError
from s3f_edge.outputs import atomic_open, from_spreadsheet, write_csv

PROBABILITY_PREFIX = "prob_"
STATUSES = ("ok", "refused", "error")
FILE_SIZE, FILE_MTIME = "file_size", "file_mtime_ns"  # the file as it was answered ("" where it could not be read)
REQUIRED_COLUMNS = ("path", "status")
# The prediction set of an ok row (its classes joined by "|", in the model's class order) and its size; a size of
# 0 is an empty set ("no class plausible"); both cells are empty for other rows and models without sets.
ANSWER_SET, SET_SIZE, SET_SEPARATOR = "answer_set", "set_size", "|"
JOURNAL_KEY = "s3f_edge_journal"  # the journal's first line: {JOURNAL_KEY: {...the run...}}
RESULT_SUFFIXES = (".csv", ".jsonl", ".json")


def columns(class_names: list[str]) -> list[str]:
    """The columns of a results file, in order, for a model with ``class_names``."""
    return ["path", "status", "reason", "predicted_class", ANSWER_SET, SET_SIZE,
            *[PROBABILITY_PREFIX + name for name in class_names],
            OOD_SCORE, "ood_threshold", "model", "model_sha256", FILE_SIZE, FILE_MTIME]


def classes_of(rows: list[dict]) -> list[str]:
    """The class names that results rows hold, in their column order (``prob_<class>`` keys)."""
    return [key[len(PROBABILITY_PREFIX):] for key in rows[0] if key.startswith(PROBABILITY_PREFIX)] if rows else []


def file_fingerprint(path: str | Path) -> dict:
    """A file's size and modification time (ns) as rows record them; empty cells where it cannot be read."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):  # ValueError: a path no file can have (a NUL byte, a lone surrogate)
        return {FILE_SIZE: "", FILE_MTIME: ""}
    return {FILE_SIZE: status.st_size, FILE_MTIME: status.st_mtime_ns}


def same_fingerprint(row: dict, fingerprint: dict) -> bool:
    """Whether ``row`` was answered for the file as ``fingerprint`` describes it now (rows without the columns,
    from an older s3f-edge, never match: their files are answered again)."""
    if FILE_SIZE not in row or FILE_MTIME not in row:
        return False
    return all(str(row[key]) == str(fingerprint[key]) for key in (FILE_SIZE, FILE_MTIME))


def _clipped(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (file names are limited in bytes, not characters)."""
    data = text.encode("utf-8", "surrogateescape")[:limit]
    return data.decode("utf-8", "ignore")


def overlay_name(path: str | Path, class_name: str) -> str:
    """The file name of the Grad-CAM overlay of the row for ``path``: the file's own name (shortened) for people,
    and a digest of the whole path as the row spells it, so that ``a/x.jpg``, ``a/x.png`` and ``b/x.jpg`` never
    share one. At most 230 bytes, under every file system's limit of 255."""
    text = str(path)
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{_clipped(Path(text).name, 100)}.{digest}.{_clipped(class_name, 90)}.gradcam.png"


def json_line(row: dict) -> str:
    """A row as one line of JSON: non-ASCII text kept readable, except in a row that names a file whose name is
    not valid UTF-8 (escaped then, so that it survives the round trip); never a line break inside."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row)
    return text + "\n"


def journal_path(output: Path) -> Path:
    """Where the journal of ``output`` lives (a hidden file beside it)."""
    return output.with_name(f".{output.name}.partial.jsonl")


def journal_header(replaces_output: bool, model_sha256: str) -> str:
    """The journal's first line: what the run is (a line of JSON)."""
    return json.dumps({JOURNAL_KEY: {"version": 1, "replaces_output": replaces_output,
                                     "model_sha256": model_sha256}}) + "\n"


def _not_results(path: Path, why: str, advice: str) -> InputError:
    return InputError(f"{path} is not an s3f-edge results file ({why}){'; ' + advice if advice else ''}")


def _check_rows(path: Path, rows: list, advice: str, where=lambda index: f"row {index + 1}") -> list[dict]:
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _not_results(path, f"{where(index)} is not a row of named values", advice)
        missing = [name for name in REQUIRED_COLUMNS if name not in row]
        if missing:
            raise _not_results(path, f"{where(index)} has no {' or '.join(missing)}", advice)
        if not isinstance(row["path"], str) or not row["path"]:
            raise _not_results(path, f"{where(index)} has no path", advice)
        if row["status"] not in STATUSES:
            raise _not_results(path, f"{where(index)}: status {row['status']!r} is not one of {', '.join(STATUSES)}",
                               advice)
    return rows


def _read_csv(path: Path, advice: str) -> list[dict]:
    # utf-8-sig: a spreadsheet that saved the file may have put a byte-order mark before the header.
    # surrogateescape: a path that is not valid UTF-8 (a file name from another system) reads back as written.
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            return []
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise _not_results(path, f"no {' or '.join(missing)} column", advice)
        rows, lines = [], []
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                raise _not_results(path, f"line {reader.line_num} has {len(cells)} cells where the header has "
                                   f"{len(header)}", advice)
            rows.append({key: from_spreadsheet(value) for key, value in zip(header, cells)})
            lines.append(reader.line_num)
    return _check_rows(path, rows, advice, lambda index: f"line {lines[index]}")


def _read_jsonl(path: Path, advice: str, journal: bool) -> tuple[dict, list[dict]]:
    # Lines end at "\n" only: str.splitlines would also split at U+2028 and the like, which a file name may hold.
    lines = [line.removesuffix("\r") for line in path.read_text(encoding="utf-8-sig").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    header, rows, numbers = {}, [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            if journal and number == len(lines):
                continue  # the process died while writing its last row: that file is answered again
            raise _not_results(path, f"line {number} is not JSON", advice) from None
        if journal and isinstance(value, dict) and JOURNAL_KEY in value:
            header = value[JOURNAL_KEY] if isinstance(value[JOURNAL_KEY], dict) else {}
            continue
        rows.append(value)
        numbers.append(number)
    return header, _check_rows(path, rows, advice, lambda index: f"line {numbers[index]}")


def read_results(path: str | Path, advice: str = "") -> list[dict]:
    """The rows of a results file ``infer`` wrote (.csv, .jsonl or .json); [] when it does not exist.

    Args:
        path: the file.
        advice: what the user should do if it is not a results file (ends the error message).

    Returns:
        One dict per row (CSV cells as text; JSON values as they were written).

    Raises:
        InputError: not an s3f-edge results file: unreadable as its suffix says, a row without path or status, a
            CSV line with too few or too many cells, a status that is not ok, refused or error.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return _read_csv(path, advice)
        if suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8-sig"))
            if not isinstance(document, dict) or not isinstance(document.get("results"), list):
                raise _not_results(path, "no list of results", advice)
            return _check_rows(path, document["results"], advice)
        return _read_jsonl(path, advice, journal=False)[1]
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        raise _not_results(path, f"{type(error).__name__}: {error}", advice) from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}; check its permissions") from None


def read_journal(path: str | Path, advice: str = "") -> tuple[dict, list[dict]]:
    """A journal's header (what the run is; {} when absent) and rows; a torn last line is ignored.

    Raises:
        InputError: a line other than the last is not JSON, or a row is not a results row.
    """
    path = Path(path)
    if not path.exists():
        return {}, []
    try:
        return _read_jsonl(path, advice, journal=True)
    except UnicodeDecodeError as error:
        raise _not_results(path, f"{type(error).__name__}: {error}", advice) from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}; check its permissions") from None


def journal_has_rows(path: str | Path) -> bool:
    """Whether the journal at ``path`` holds a row (one that a failed start left holds only its header line); an
    unreadable journal counts as holding rows, so that nothing deletes it unasked."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    return True  # a torn row is a row
                if not (isinstance(value, dict) and JOURNAL_KEY in value):
                    return True
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False


def open_journal(path: str | Path):
    """Open a journal to append rows: a last line torn by a process that died while writing it is cut off first,
    so that the next row starts on a line of its own (the torn row's file is answered again).

    Returns:
        The journal, open for appending text (UTF-8; write ``json_line`` rows).
    """
    path = Path(path)
    if path.exists():
        with open(path, "rb+") as stream:
            data = stream.read()
            if data and not data.endswith(b"\n"):
                stream.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


def write_results(output: str | Path, rows: list[dict], class_names: list[str], model_name: str) -> None:
    """Write rows sorted by path to ``output`` atomically (.csv: spreadsheet-safe cells; .jsonl; .json: with the
    model's name). JSON keeps every value as it is."""
    output = Path(output)
    rows = sorted(rows, key=lambda r: r["path"])
    if output.suffix.lower() == ".csv":
        write_csv(output, columns(class_names), rows)
        return
    with atomic_open(output, "w", encoding="utf-8") as stream:
        if output.suffix.lower() == ".jsonl":
            stream.writelines(json_line(r) for r in rows)
        else:
            document = json.dumps({"model": model_name, "results": rows}, ensure_ascii=False, indent=1)
            try:
                document.encode("utf-8")
            except UnicodeEncodeError:  # a file name that is not valid UTF-8: escaped (see json_line)
                document = json.dumps({"model": model_name, "results": rows}, indent=1)
            stream.write(document)
