"""The review page of an ``infer`` results file: what the model said about each file, with the image."""
from __future__ import annotations

import math
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from s3f_edge.contract import OOD_SCORE
from s3f_edge.errors import InputError, MissingFileError
from s3f_edge.outputs import ensure_writable, refuse_existing
from s3f_edge.report.page import render, write_page
from s3f_edge.report.thumbnails import DEFAULT_SIZE, file_thumbnail, file_thumbnails
from s3f_edge.runtime.infer import read_rows

PROBABILITY_PREFIX = "prob_"


def _number(value) -> float | None:
    """A cell as a finite float, or None (empty, missing or not a number)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def classes_of(rows: list[dict]) -> list[str]:
    """The class names a results file holds, in its column order (``prob_<class>`` columns)."""
    return [key[len(PROBABILITY_PREFIX):] for key in rows[0] if key.startswith(PROBABILITY_PREFIX)] if rows else []


def overlay_path(explain_dir: Path, path: str, class_name: str) -> Path:
    """Where ``infer --explain`` wrote the Grad-CAM overlay of ``path`` for ``class_name``."""
    return explain_dir / f"{Path(path).stem}.{class_name}.gradcam.png"


def page_rows(rows: list[dict], classes: list[str], thumbnails: list[str | None],
              explain_dir: Path | None = None) -> list[dict]:
    """The rows as the page's script reads them: numbers parsed, the top class and its probability, images.

    Args:
        rows: results rows (``infer``'s columns), as read from the file.
        classes: the class names, in column order.
        thumbnails: one data URI or None per row.
        explain_dir: the folder of Grad-CAM overlays, or None.

    Returns:
        One dict per row: path, status, reason, predicted (ok rows), top (the most probable class, any answered
        row), probs (one per class, or None), confidence (the top probability), ood, thumb, overlay.
    """
    result = []
    for row, thumb in zip(rows, thumbnails):
        probs = [_number(row.get(PROBABILITY_PREFIX + name)) for name in classes]
        answered = all(p is not None for p in probs) and bool(classes)
        top = max(range(len(classes)), key=lambda i: probs[i]) if answered else None
        overlay = None
        if explain_dir is not None and top is not None:
            candidate = overlay_path(explain_dir, row["path"], classes[top])
            overlay = file_thumbnail(candidate) if candidate.is_file() else None
        result.append({
            "path": row["path"], "status": row.get("status", ""), "reason": row.get("reason", ""),
            "predicted": row.get("predicted_class", "") or "", "top": None if top is None else classes[top],
            "probs": probs if answered else None, "confidence": probs[top] if answered else None,
            "ood": _number(row.get(OOD_SCORE)), "thumb": thumb, "overlay": overlay,
        })
    return result


def summary(rows: list[dict], classes: list[str]) -> dict:
    """Counts per status and per predicted class, the models and refusal thresholds the rows name."""
    statuses = Counter(row.get("status", "") for row in rows)
    predicted = Counter(row.get("predicted_class", "") for row in rows if row.get("status") == "ok")
    thresholds = sorted({str(row["ood_threshold"]) for row in rows if row.get("ood_threshold") not in ("", None)})
    models = sorted({(row.get("model", "?"), row.get("model_sha256", "")) for row in rows})
    return {
        "total": len(rows), "ok": statuses.get("ok", 0), "refused": statuses.get("refused", 0),
        "error": statuses.get("error", 0), "per_class": [(name, predicted.get(name, 0)) for name in classes],
        "thresholds": thresholds, "models": [{"name": name, "sha256": sha} for name, sha in models],
    }


def _read_results(files: list[Path]) -> tuple[list[dict], list[str]]:
    """Every row of ``files`` and their common class names (InputError when a file is empty or not results)."""
    rows, classes = [], None
    for path in files:
        if not path.is_file():
            raise MissingFileError(f"no results file at {path}; give the file infer wrote (--out)")
        found = read_rows(path)
        if not found:
            raise InputError(f"{path} holds no rows; run s3f-edge infer first")
        names = classes_of(found)
        if not names:
            raise InputError(f"{path} has no probability columns (prob_<class>); give a results file of s3f-edge "
                             "infer")
        if classes is not None and names != classes:
            raise InputError(f"{path} has the classes {names}, not {classes} like the files before it; review "
                             "results of models with the same classes together, others apart")
        classes = names
        rows += found
    return rows, classes


def write_results_report(results: str | Path | list[str | Path], out: str | Path,
                         explain_dir: str | Path | None = None, run: dict | None = None,
                         thumbnail_size: int = DEFAULT_SIZE, workers: int = 4, progress: bool = False,
                         overwrite: bool = False, option: str = "--report", require_overlays: bool = True) -> Path:
    """Write one self-contained HTML page to review ``infer`` results.

    Args:
        results: the .csv, .jsonl or .json file ``infer`` wrote, or several (their rows on one page; the same
            classes in each).
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
    rows, classes = _read_results(files)
    check_report_path(out, overwrite, option)
    thumbnails = file_thumbnails([row["path"] for row in rows], thumbnail_size, workers, progress)
    written = [(str(path), datetime.fromtimestamp(os.path.getmtime(path), timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
               for path in files]
    title = f"Review: {files[0].name}" + (f" and {len(files) - 1} more" if len(files) > 1 else "")
    html = render("results.html.j2", ["common.js", "results.js"],
                  data={"classes": classes, "rows": page_rows(rows, classes, thumbnails, explain_dir)},
                  title=title, results=written, classes=classes, summary=summary(rows, classes), run=run or {},
                  explained=explain_dir is not None)
    return write_page(out, html)


def check_report_path(out: Path, overwrite: bool, option: str = "--report") -> None:
    """Refuse a page path before any work: not .html, an existing page without ``overwrite``, or unwritable."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{option} must end in .html, got {out.name!r}; choose a name like review.html")
    refuse_existing([out], overwrite=overwrite, option=option)
    ensure_writable(out, option)
