"""The codes of a model's classes: how a class is written into a DICOM report (code value, coding scheme
designator, code meaning), stored in the model's metadata at train or export time (``--class-codes FILE``).

Without a class-code file every class gets a code in s3f-edge's private scheme (``99S3FEDGE``; PS3.16 section
8.2: private designators start with "99"), its name being its code value and meaning; a site that wants SNOMED CT
or its own codes gives a small JSON or CSV file (``load_class_codes``).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from s3f_edge.errors import InputError, MissingFileError

PRIVATE_SCHEME = "99S3FEDGE"
CODE_FILE_FORMAT = ('a .json object {"class": ["code value", "coding scheme", "meaning"], ...} or a .csv file with '
                    "the header class,code_value,scheme,meaning")


def _code_problem(value: str, scheme: str, meaning: str) -> str | None:
    """What makes (value, scheme, meaning) unusable as a DICOM code, or None."""
    if not all(isinstance(part, str) and part.strip() for part in (value, scheme, meaning)):
        return "code value, coding scheme and meaning must each be non-empty text"
    if any("\\" in part for part in (value, scheme, meaning)):
        return "a backslash cannot be part of a DICOM code"
    if len(value) > 64 or len(meaning) > 64 or len(scheme) > 16:
        return "the code value and meaning take at most 64 characters, the coding scheme at most 16"
    return None


def default_class_codes(class_names: list[str]) -> dict[str, tuple[str, str, str]]:
    """Codes in the private scheme: each class's name is its code value and meaning."""
    return {name: (name, PRIVATE_SCHEME, name) for name in class_names}


def check_class_codes(codes: dict, class_names: list[str]) -> dict[str, tuple[str, str, str]]:
    """The codes of a model's classes, checked: every class coded, no other, each a usable and distinct code.

    Args:
        codes: class name -> (code value, coding scheme designator, code meaning).
        class_names: the model's classes.

    Returns:
        The codes as tuples, in ``class_names`` order.

    Raises:
        InputError: a class without a code, a code for a class the model lacks, or a code DICOM cannot hold.
    """
    missing = [name for name in class_names if name not in codes]
    extra = [str(name) for name in codes if name not in class_names]
    if missing or extra:
        what = [f"no code for {', '.join(missing)}"] * bool(missing) + [f"codes for {', '.join(extra)}, which the "
                                                                       "model does not have"] * bool(extra)
        raise InputError(f"class codes do not fit the model's classes ({'; '.join(what)})")
    checked, owners = {}, {}
    for name in class_names:
        code = codes[name]
        if not isinstance(code, (list, tuple)) or len(code) != 3:
            raise InputError(f"the code of class {name!r} is not [code value, coding scheme, meaning]: {code!r}")
        problem = _code_problem(*code)
        if problem:
            raise InputError(f"the code of class {name!r} cannot be used: {problem} (give the classes' codes in "
                             f"{CODE_FILE_FORMAT})")
        value, scheme, meaning = (part.strip() for part in code)
        if (value, scheme) in owners:
            raise InputError(f"classes {owners[value, scheme]!r} and {name!r} have the same code {scheme} {value}")
        owners[value, scheme] = name
        checked[name] = (value, scheme, meaning)
    return checked


def _read_code_file(path: Path, text: str) -> dict:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path} is not a class-code file (not JSON: {error}); expected {CODE_FILE_FORMAT}") \
                from None
        if not isinstance(data, dict):
            raise InputError(f"{path} is not a class-code file (not a JSON object); expected {CODE_FILE_FORMAT}")
        return data
    if path.suffix.lower() != ".csv":
        raise InputError(f"{path}: a class-code file is {CODE_FILE_FORMAT}")
    rows = list(csv.reader(io.StringIO(text)))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if header != ["class", "code_value", "scheme", "meaning"]:
        raise InputError(f"{path} is not a class-code file (its header is {','.join(header) or 'missing'}); "
                         f"expected {CODE_FILE_FORMAT}")
    data = {}
    for number, cells in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != 4 or cells[0] in data:
            why = "a class given twice" if len(cells) == 4 else f"{len(cells)} cells, not 4"
            raise InputError(f"{path} is not a class-code file (line {number}: {why}); expected {CODE_FILE_FORMAT}")
        data[cells[0]] = cells[1:]
    return data


def load_class_codes(path: str | Path) -> dict[str, tuple[str, str, str]]:
    """The classes' codes from a small file, as ``ModelIdentity.class_codes`` takes them.

    Args:
        path: a .json object {"class": ["code value", "coding scheme", "meaning"], ...}, or a .csv file with the
            header ``class,code_value,scheme,meaning`` and one class per line.

    Returns:
        Class name -> (code value, coding scheme designator, code meaning), in the file's order.

    Raises:
        MissingFileError: no such file.
        InputError: a file that cannot be read or is not a class-code file (one line naming the fault).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such class-code file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the class-code file ({error})") from error
    codes = {}
    for name, code in _read_code_file(path, text).items():
        problem = "not a list" if not isinstance(code, list) or len(code) != 3 else _code_problem(*code)
        if problem:
            raise InputError(f"{path} is not a class-code file (class {name!r}: {problem}); expected "
                             f"{CODE_FILE_FORMAT}")
        codes[name] = tuple(part.strip() for part in code)
    return codes


def class_codes_for(path: str | Path | None, class_names: list[str]) -> dict[str, list[str]] | None:
    """The codes a code file gives a model's classes, checked, as the model's metadata stores them.

    Args:
        path: the class-code file (``CODE_FILE_FORMAT``); None: no codes (DICOM reports use the private scheme).
        class_names: the model's classes.

    Returns:
        class name -> [code value, coding scheme designator, code meaning], or None without a file.

    Raises:
        InputError, MissingFileError: the file cannot be read or does not code exactly the model's classes.
    """
    if path is None:
        return None
    codes = check_class_codes(load_class_codes(path), class_names)
    return {name: list(code) for name, code in codes.items()}
