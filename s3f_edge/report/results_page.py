"""The review page of ``infer`` results files: what the model said about each file, with the image.

Several results files (e.g. two models on one folder) share a page: each row names the results file and model
that answered it, and the summary describes every file. Each image is shown as it is now only when it is the
file that was answered: a row records the file's size and modification time at its answer
(``results.FILE_SIZE``, ``results.FILE_MTIME``), and an image changed since then is marked, its current picture
hidden until asked for.

An ok row of a model with prediction sets (``results.ANSWER_SET``, ``results.SET_SIZE``) shows its set; an empty
set (size 0: no class plausible) is said in words, never as a class. Results without the columns (an older
s3f-edge, a model without sets) show no set.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from s3f_edge.contract import OOD_SCORE
from s3f_edge.errors import InputError, MissingFileError
from s3f_edge.outputs import ensure_writable, refuse_existing
from s3f_edge.report.page import render, write_page
from s3f_edge.report.thumbnails import DEFAULT_SIZE, Thumbnail, file_thumbnail, read_thumbnails
from s3f_edge.results import (
    ANSWER_SET,
    FILE_MTIME,
    FILE_SIZE,
    PROBABILITY_PREFIX,
    SET_SEPARATOR,
    SET_SIZE,
    classes_of,
    file_fingerprint,
    overlay_name,
    read_results,
    same_fingerprint,
)

ADVICE = "give a results file that s3f-edge infer wrote"
SHORT_SHA = 12  # hex digits of a model's sha256 shown on the page
# What the page says about each row's image (its "image" field); the current picture is shown only for SHOWN.
SHOWN, CHANGED, UNAVAILABLE = "shown", "changed", "unavailable"


def _number(value) -> float | None:
    """A cell as a finite float, or None (empty, missing or not a number)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value) -> str:
    """A cell as text ("" for a missing JSON value), so the page's script always gets strings."""
    return "" if value is None else str(value)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def prediction_set(row: dict) -> list[str] | None:
    """The classes of an ok row's prediction set, [] for an empty set (no class plausible), or None: no set (not
    an ok row, a model without sets, an older results file without the columns, or a size that is not a count)."""
    if row.get("status") != "ok":
        return None
    size = _number(row.get(SET_SIZE))
    if size is None or size < 0 or not size.is_integer():
        return None
    if size == 0:
        return []  # whatever the other cell holds: an empty set is never shown as a class
    members = [name for name in _text(row.get(ANSWER_SET)).split(SET_SEPARATOR) if name]
    return members or None  # a size without its classes cannot be shown, and is not an empty set


def set_counts(rows: list[dict]) -> dict | None:
    """The ok rows by the size of their prediction set: one (1 class), several (2 or more), empty (0); None when
    no row has a set."""
    sizes = [len(members) for members in map(prediction_set, rows) if members is not None]
    if not sizes:
        return None
    return {"one": sizes.count(1), "several": sum(size >= 2 for size in sizes), "empty": sizes.count(0)}


def overlay_path(explain_dir: Path, path: str, class_name: str) -> Path:
    """Where ``infer --explain`` wrote the Grad-CAM overlay of ``path`` for ``class_name``."""
    return explain_dir / overlay_name(path, class_name)


def _describe(fingerprint: dict, exact: bool = False) -> str:
    """A recorded or current file as a person reads it: its size and modification time (UTC)."""
    size, mtime = _text(fingerprint.get(FILE_SIZE)), _text(fingerprint.get(FILE_MTIME))
    if not size and not mtime:
        return "unreadable"
    try:
        when = datetime.fromtimestamp(int(mtime) / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        size = f"{int(size):,}"
    except (ValueError, OverflowError, OSError):
        return f"{size} bytes, modified {mtime} ns"
    return f"{size} bytes, modified {when}" + (f" ({mtime} ns)" if exact else "")


def _fingerprint_now(path: str) -> dict:
    """``results.file_fingerprint``, also for a path no file can have (a NUL, a lone surrogate from JSON)."""
    try:
        return file_fingerprint(path)
    except ValueError:
        return {FILE_SIZE: "", FILE_MTIME: ""}


def image_state(row: dict, now: dict | None, thumbnail: Thumbnail) -> tuple[str, str]:
    """Whether the page may show a row's image as the file that was answered, and if not, why.

    Args:
        row: the results row (with ``FILE_SIZE`` and ``FILE_MTIME`` when a recent s3f-edge wrote it).
        now: the file's ``results.file_fingerprint`` now (taken before its thumbnail); None: do not compare.
        thumbnail: the file's picture now, or why there is none.

    Returns:
        (``SHOWN``, ""), (``CHANGED``, what changed: the file then and now) or (``UNAVAILABLE``, why there is no
        picture: not found, unreadable, not an image or corrupt). A row without the recorded columns (an older
        results file) cannot be found changed.
    """
    if now is not None and _text(now.get(FILE_SIZE)) == "" and thumbnail.uri is None:  # gone: more than "changed"
        relative = "" if os.path.isabs(row["path"]) else "; a relative path: write the page where infer ran"
        return UNAVAILABLE, (thumbnail.problem or "not found") + relative
    if now is not None and FILE_SIZE in row and FILE_MTIME in row and not same_fingerprint(row, now):
        then, current = _describe(row), _describe(now)
        if then == current:  # changed within the second the page shows
            then, current = _describe(row, exact=True), _describe(now, exact=True)
        note = f"changed after its answer: answered as {then}; now {current}"
        return CHANGED, note + (f"; the current file: {thumbnail.problem}" if thumbnail.problem else "")
    if thumbnail.uri is None:
        return UNAVAILABLE, thumbnail.problem or "not readable as an image"
    return SHOWN, ""


def page_rows(rows: list[dict], classes: list[str], thumbnails: list[str | Thumbnail | None],
              explain_dir: Path | None = None, fingerprints: list[dict] | None = None,
              sources: list[int] | None = None) -> list[dict]:
    """The rows as the page's script reads them: numbers parsed, the top class and its probability, images.

    Args:
        rows: results rows (``infer``'s columns), as read from the file.
        classes: the class names, in column order.
        thumbnails: one ``Thumbnail`` (or data URI, or None) per row: the file's picture now.
        explain_dir: the folder of Grad-CAM overlays, or None.
        fingerprints: each row's file now (``results.file_fingerprint``), to find images changed after their
            answer; None: not compared.
        sources: the index of each row's results file; None: all from the first.

    Returns:
        One dict per row: path, status, reason, predicted (ok rows), top (the most probable class, any answered
        row), probs (one per class, or None), confidence (the top probability), set (the prediction set's classes,
        [] when empty, None without a set: see ``prediction_set``), set_size (None without a set), ood, thumb,
        overlay, source, image (``SHOWN``, ``CHANGED`` or ``UNAVAILABLE``) and image_note (why not shown).
    """
    result = []
    for index, (row, thumb) in enumerate(zip(rows, thumbnails)):
        if not isinstance(thumb, Thumbnail):
            thumb = Thumbnail(thumb, None if thumb else "not readable as an image")
        state, note = image_state(row, None if fingerprints is None else fingerprints[index], thumb)
        probs = [_number(row.get(PROBABILITY_PREFIX + name)) for name in classes]
        answered = all(p is not None for p in probs) and bool(classes)
        top = max(range(len(classes)), key=lambda i: probs[i]) if answered else None
        members = prediction_set(row)
        overlay = None
        if explain_dir is not None and top is not None:
            candidate = overlay_path(explain_dir, row["path"], classes[top])
            overlay = file_thumbnail(candidate)  # None when missing (or a name the system refuses)
        result.append({
            "path": row["path"], "status": _text(row.get("status")), "reason": _text(row.get("reason")),
            "predicted": _text(row.get("predicted_class")), "top": None if top is None else classes[top],
            "probs": probs if answered else None, "confidence": probs[top] if answered else None,
            "set": members, "set_size": None if members is None else len(members),
            "ood": _number(row.get(OOD_SCORE)), "thumb": thumb.uri, "overlay": overlay,
            "source": 0 if sources is None else sources[index], "image": state, "image_note": note,
        })
    return result


def summary(rows: list[dict], classes: list[str]) -> dict:
    """Counts per status, per predicted class and per prediction set size, the models and refusal thresholds the
    rows name.

    Args:
        rows: results rows.
        classes: the class names, in column order.

    Returns:
        total (rows), files (distinct paths), ok, refused, error, per_class ([(class, ok rows)]), sets (ok rows by
        set size, ``set_counts``: None without sets), thresholds (distinct, as recorded), models ([{name, sha256}]).
    """
    statuses = Counter(_text(row.get("status")) for row in rows)
    predicted = Counter(_text(row.get("predicted_class")) for row in rows if row.get("status") == "ok")
    thresholds = sorted({_text(row.get("ood_threshold")) for row in rows} - {""})
    models = sorted({(_text(row.get("model")) or "?", _text(row.get("model_sha256"))) for row in rows})
    return {
        "total": len(rows), "files": len({row["path"] for row in rows}), "ok": statuses.get("ok", 0),
        "refused": statuses.get("refused", 0), "error": statuses.get("error", 0),
        "per_class": [(name, predicted.get(name, 0)) for name in classes], "sets": set_counts(rows),
        "thresholds": thresholds, "models": [{"name": name, "sha256": sha} for name, sha in models],
    }


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}; check its permissions") from None


def read_results_files(files: list[Path], log: Callable[[str], None] | None = None
                       ) -> tuple[list[tuple[Path, list[dict]]], list[str], list[str]]:
    """Read results files for one page: each once, all with the same classes.

    A file given again (the same file by another path, or a copy with identical content) would count every
    row twice; it is read once, and ``log`` and the page say so (a shell glob or a backup copy is an easy way
    to name a file twice, and the page is right without it, so refusing would only cost a second run).

    Args:
        files: the results files, in the order given.
        log: receives one line per file given again; None: nothing is printed.

    Returns:
        ([(path, rows)] per distinct file, the class names, one note per file given again).

    Raises:
        MissingFileError: a file does not exist.
        InputError: no file, or a file is not an s3f-edge results file (the message names the line), holds no rows,
            has no probability columns, or has other classes than the files before it.
    """
    if not files:
        raise InputError(f"no results file given; {ADVICE}")
    read, classes, notes = [], None, []
    seen_paths, seen_digests = {}, {}
    for path in files:
        if not path.is_file():
            raise MissingFileError(f"no results file at {path}; give the file infer wrote (--out)")
        found = read_results(path, ADVICE)
        if not found:
            raise InputError(f"{path} holds no rows; {ADVICE}")
        names = classes_of(found)
        if not names:
            raise InputError(f"{path} has no probability columns (prob_<class>); {ADVICE}")
        if classes is not None and names != classes:
            raise InputError(f"{path} has the classes {names}, not {classes} like the files before it; review "
                             "results of models with the same classes together, others apart")
        classes = names
        resolved, digest = path.resolve(), _digest(path)
        first = seen_paths.get(resolved, seen_digests.get(digest))
        if first is not None:
            earlier = read[first][0]
            if resolved not in seen_paths:
                note = f"{path} has the same content as {earlier} (#{first + 1})"
            else:
                note = f"{path} was given again" + ("" if str(path) == str(earlier) else f" (as {earlier})")
            note += ": read once, its rows counted once"
            notes.append(note)
            if log is not None:
                log(note)
            continue
        seen_paths[resolved], seen_digests[digest] = len(read), len(read)
        read.append((path, found))
    return read, classes, notes


def _written(path: Path) -> str:
    return datetime.fromtimestamp(os.path.getmtime(path), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def describe_sources(read: list[tuple[Path, list[dict]]], classes: list[str]) -> list[dict]:
    """What the summary says of each results file.

    Args:
        read: [(path, rows)] per results file (``read_results_files``).
        classes: the class names, in column order.

    Returns:
        One dict per file: label (#1, #2...), path, name, written (its modification time, UTC), models ([{name,
        sha256, short}]), thresholds (as recorded), counts (``summary``) and fingerprints (whether every row
        records its file's size and time, so that a changed image can be found).
    """
    described = []
    for index, (path, rows) in enumerate(read):
        counts = summary(rows, classes)
        described.append({
            "label": f"#{index + 1}", "path": str(path), "name": path.name, "written": _written(path),
            "models": [{**model, "short": model["sha256"][:SHORT_SHA]} for model in counts["models"]],
            "thresholds": counts["thresholds"], "counts": counts,
            "fingerprints": all(FILE_SIZE in row and FILE_MTIME in row for row in rows),
        })
    return described


def totals_line(counts: dict, results_files: int) -> str:
    """The summary's first line, distinct files and rows counted apart.

    Args:
        counts: ``summary`` of every row on the page.
        results_files: how many results files the rows come from.

    Returns:
        E.g. "24 files, 48 rows from 2 results files" (two models answering the same 24 images).
    """
    return (f"{_plural(counts['files'], 'file')}, {_plural(counts['total'], 'row')} from "
            f"{_plural(results_files, 'results file')}")


def _reports_fact(dicom_sr: str | Path | None, required: bool) -> dict:
    """The summary's line about the DICOM reports in ``dicom_sr`` (none without it)."""
    if dicom_sr is None:
        return {}
    found = len(list(Path(dicom_sr).glob("*.dcm"))) if Path(dicom_sr).is_dir() else 0
    if required and not found:
        raise InputError(f"no files named *.dcm (DICOM reports) in {dicom_sr}; give the folder infer --dicom-sr wrote "
                         "into")
    return {"DICOM reports": f"{found} in {dicom_sr}"}


def write_results_report(results: str | Path | list[str | Path], out: str | Path,
                         explain_dir: str | Path | None = None, run: dict | None = None,
                         thumbnail_size: int = DEFAULT_SIZE, workers: int = 4, progress: bool = False,
                         overwrite: bool = False, option: str = "--report", require_overlays: bool = True,
                         log: Callable[[str], None] | None = None, dicom_sr: str | Path | None = None) -> Path:
    """Write one self-contained HTML page to review ``infer`` results.

    Args:
        results: the .csv, .jsonl or .json file ``infer`` wrote, or several (their rows on one page, each row
            naming its results file and model; the same classes in each; a file given twice is read once).
        out: the page to write (.html); an existing one is refused unless ``overwrite``.
        explain_dir: the folder ``infer --explain`` wrote Grad-CAM overlays into; None: no overlays.
        run: facts about the run to show in the summary (e.g. folder, backend, seconds); None: only what the
            results files themselves record.
        thumbnail_size: the longer side of each embedded image, in pixels.
        workers: decoding threads for the thumbnails.
        progress: show a progress bar on stderr.
        overwrite: replace an existing page.
        option: the command-line option that named ``out``, for messages.
        require_overlays: refuse an ``explain_dir`` without overlays (a folder given by mistake); false when the
            run itself wrote it, where no overlay only means no image was of ``--explain-classes``.
        log: receives a line for each results file given again (read once); None: the page alone says so.
        dicom_sr: the folder ``infer --dicom-sr`` wrote DICOM reports into: the summary counts them (with
            ``require_overlays``, a folder without any is refused as given by mistake).

    Returns:
        The page's path.

    Raises:
        MissingFileError: a results file or ``explain_dir`` does not exist.
        InputError: a results file is not an s3f-edge results file or holds no rows, the files' classes differ,
            ``explain_dir`` holds no overlays, or ``out`` does not end in .html.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        OutputError: ``out`` cannot be written.
    """
    files = [Path(p) for p in (results if isinstance(results, (list, tuple)) else [results])]
    out = Path(out)
    if explain_dir is not None:
        explain_dir = Path(explain_dir)
        if not explain_dir.is_dir():
            raise MissingFileError(f"no overlay folder at {explain_dir}; give the folder infer --explain wrote into")
        if require_overlays and not any(explain_dir.glob("*.gradcam.png")):
            raise InputError(f"no files named *.gradcam.png in {explain_dir}; give the folder infer --explain "
                             "wrote into")
    run = {**(run or {}), **_reports_fact(dicom_sr, require_overlays)}
    read, classes, notes = read_results_files(files, log)
    check_report_path(out, overwrite, option)
    rows = [row for _, found in read for row in found]
    sources = [index for index, (_, found) in enumerate(read) for _ in found]
    paths = list(dict.fromkeys(row["path"] for row in rows))  # each image once, however many files answer it
    now = {path: _fingerprint_now(path) for path in paths}  # before reading: a file changed meanwhile looks changed
    pictures = dict(zip(paths, read_thumbnails(paths, thumbnail_size, workers, progress)))
    shown = page_rows(rows, classes, [pictures[row["path"]] for row in rows], explain_dir,
                      [now[row["path"]] for row in rows], sources)
    described = describe_sources(read, classes)
    counts = summary(rows, classes)
    images = Counter(row["image"] for row in shown)
    title = f"Review: {read[0][0].name}" + (f" and {len(read) - 1} more" if len(read) > 1 else "")
    source_data = [{"label": s["label"], "name": s["name"], "model": ", ".join(m["name"] for m in s["models"])}
                   for s in described]
    html = render("results.html.j2", ["common.js", "results.js"],
                  data={"classes": classes, "sources": source_data, "rows": shown},
                  title=title, sources=described, classes=classes, summary=counts,
                  totals=totals_line(counts, len(read)), changed=images.get(CHANGED, 0),
                  unavailable=images.get(UNAVAILABLE, 0), notes=notes, run=run,
                  explained=explain_dir is not None)
    return write_page(out, html)


def check_report_path(out: Path, overwrite: bool, option: str = "--report") -> None:
    """Refuse a page path before any work: not .html, an existing page without ``overwrite``, or unwritable."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{option} must end in .html, got {out.name!r}; choose a name like review.html")
    refuse_existing([out], overwrite=overwrite, option=option)
    ensure_writable(out, option)
