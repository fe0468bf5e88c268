"""What ``infer --resume`` may keep of an earlier run: rows of the same model, decided with the same refusal
threshold, for files of this folder that have not changed since they were answered."""
from __future__ import annotations

import os
from pathlib import Path

from s3f_edge.errors import InputError
from s3f_edge.results import FILE_SIZE, file_fingerprint, read_journal, read_results, same_fingerprint
from s3f_edge.runtime.answers import threshold_cell
from s3f_edge.runtime.inputs import Listing, same_file_key

ANOTHER_OUT = "write to another --out"


def earlier_rows(output: Path, journal: Path, predictor) -> list[dict]:
    """The rows a ``--resume`` may keep: the journal's, and the output's unless the interrupted run was replacing it
    (``--overwrite``): those belong to the run that was being replaced.

    Raises:
        InputError: rows (or the journal's run) of another model, or a file that is not a results file.
    """
    header, journaled = read_journal(journal, ANOTHER_OUT)
    replaced = bool(header.get("replaces_output"))
    rows = journaled if replaced else read_results(output, ANOTHER_OUT) + journaled
    found = {(r.get("model", "?"), str(r.get("model_sha256", ""))) for r in rows}
    if header.get("model_sha256"):
        found.add(("the interrupted run's model", header["model_sha256"]))
    others = {(name, sha) for name, sha in found if sha != predictor.sha256}
    if others:
        names = ", ".join(f"{name} (sha256 {sha[:12] or 'unknown'})" for name, sha in sorted(others))
        raise InputError(f"{output} holds rows from {names}, not from {predictor.name} (sha256 "
                         f"{predictor.sha256[:12]}): resume with that --model, or {ANOTHER_OUT}")
    return rows


def check_threshold(output: Path, rows: list[dict], threshold: float | None) -> None:
    """Refuse to mix rows decided with another refusal threshold into the output."""
    decided = {str(r.get("ood_threshold", "")) for r in rows if r.get("status") in ("ok", "refused")}
    earlier = sorted(decided - {str(threshold_cell(threshold))})
    if earlier:
        now = "none (refusal off)" if threshold is None else f"{threshold:g}"
        shown = ", ".join(value or "none (refusal off)" for value in earlier)
        if len(earlier) > 1:
            same = "the earlier run's --ood-threshold or --accept-ood"
        else:
            same = "--accept-ood" if earlier == [""] else f"--ood-threshold {earlier[0]}"
        raise InputError(f"{output} holds rows decided with the refusal threshold {shown}, not {now}: resume with "
                         f"{same}, or {ANOTHER_OUT}")


def previous_rows(output: Path, journal: Path, listing: Listing, folder: Path, recursive: bool, predictor,
                  threshold: float | None, summary) -> dict:
    """The rows of an earlier run that still hold, keyed (and re-spelled) by the current listing's paths.

    Rows of files changed since they were answered, or written by an older s3f-edge that recorded no file size, are
    left out (answered again); rows of files deleted since, and of files in sub-folders that cannot be listed now,
    are dropped. The counts go to ``summary`` (``changed``, ``unrecorded``, ``deleted``).

    Raises:
        InputError: rows of another model or threshold (``earlier_rows``, ``check_threshold``), or rows for files
            outside this listing (another folder, another working folder, or ``--recursive`` missing).
    """
    rows = earlier_rows(output, journal, predictor)
    check_threshold(output, rows, threshold)
    listed = {same_file_key(f): f for f in listing.files}
    unlisted_folders = {same_file_key(f) for f in listing.unreadable}
    inside = same_file_key(folder) + os.sep
    by_path, strangers, deleted = {}, [], set()
    for row in rows:  # the journal comes last: its row of a file answered again wins
        key = same_file_key(row["path"])
        path = listed.get(key)
        if path is not None:
            by_path[str(path)] = {**row, "path": str(path)}
        elif key in unlisted_folders or os.path.isdir(key) or any(key.startswith(f + os.sep) for f in unlisted_folders):
            continue  # a sub-folder's row, or a file in a sub-folder that cannot be listed now (its row says so)
        elif key.startswith(inside) and not os.path.lexists(key):
            deleted.add(key)  # deleted since it was answered: the output follows the folder as it is now
        else:
            strangers.append(row["path"])
    if strangers:
        if not recursive and all(same_file_key(p).startswith(inside) for p in strangers):
            cause = "they are in its sub-folders: add --recursive"
        else:
            cause = "it answers another folder, or was started from another working folder"
        raise InputError(f"{output} holds {len(strangers)} row(s) for files that are not in {folder} (e.g. "
                         f"{strangers[0]}); {cause}. Resume with the same folder and options, or {ANOTHER_OUT}")
    kept = {path: row for path, row in by_path.items() if same_fingerprint(row, file_fingerprint(path))}
    summary.unrecorded = sum(FILE_SIZE not in row for row in by_path.values())
    summary.changed, summary.deleted = len(by_path) - len(kept) - summary.unrecorded, len(deleted)
    return kept
