"""`s3f-edge infer`: every file in a folder gets a row — a prediction or the reason it has none.

Decoding runs in a thread pool ahead of inference through a bounded window of futures, so memory
holds at most a few batches of pixels whatever the folder size. Rows go to a journal beside the
output as each batch finishes; the final file is written once, sorted by path, to a temporary file
that is then renamed, so a crash never leaves a half-written output and ``resume`` knows what is done.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3f_edge.contract import OOD_SCORE
from s3f_edge.data.preprocess import IMAGE_SUFFIXES, ImageDecodeError, load_image
from s3f_edge.errors import InputError, MissingFileError, S3FEdgeError
from s3f_edge.outputs import ensure_writable, refuse_existing, remove_outputs
from s3f_edge.results import (
    FILE_SIZE,
    PROBABILITY_PREFIX,
    file_fingerprint,
    journal_has_rows,
    journal_header,
    journal_path,
    json_line,
    open_journal,
    read_journal,
    read_results,
    same_fingerprint,
    write_results,
)
from s3f_edge.runtime.formats import RESULT_FORMATS
from s3f_edge.runtime.predictor import nonfinite_rows

NONFINITE_REASON = "model output is NaN or infinite: the model or its export is broken"


@dataclass
class InferSummary:
    total: int = 0
    succeeded: int = 0  # answered (status ok)
    refused: int = 0  # unlike the model's training images (status refused): an answer, not a failure
    failed: int = 0  # no answer (status error)
    skipped_as_done: int = 0
    changed: int = 0  # files answered by an earlier run that changed since: answered again (resume)
    unrecorded: int = 0  # rows of an older s3f-edge, which recorded no size or time: answered again (resume)
    deleted: int = 0  # files answered by an earlier run that no longer exist: their rows dropped (resume)
    errors_in_output: int = 0  # error rows in the whole output, earlier runs' included (what the exit code says)
    per_class: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    output: Path | None = None

    def count(self, rows: list[dict]) -> None:
        """Add freshly answered rows to the counts."""
        for row in rows:
            status = row["status"]
            if status == "ok":
                self.succeeded += 1
                self.per_class[row["predicted_class"]] += 1
            elif status == "refused":
                self.refused += 1
            else:
                self.failed += 1

    @property
    def images_per_second(self) -> float:
        processed = self.succeeded + self.refused + self.failed
        return processed / self.seconds if self.seconds > 0 else 0.0


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


@dataclass
class Decoded:
    """A file read for the model: its pixels, or the reason it has none, and the file as it was when read."""
    image: np.ndarray | None
    error: str | None
    fingerprint: dict  # size and modification time, taken before reading (results.file_fingerprint)


def decode_file(path: Path, contract) -> Decoded:
    """Read and preprocess one file; never raises for a bad file (the reason is in ``Decoded.error``)."""
    fingerprint = file_fingerprint(path)  # before reading: a file changed while read looks changed on --resume
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return Decoded(None, f"unsupported format {path.suffix or '(no suffix)'!r}; supported: "
                             f"{', '.join(IMAGE_SUFFIXES)}", fingerprint)
    try:
        return Decoded(load_image(path, contract), None, fingerprint)
    except ImageDecodeError as error:
        return Decoded(None, str(error), fingerprint)
    except (OSError, MemoryError, ValueError) as error:  # never let one file stop the run
        return Decoded(None, f"{type(error).__name__}: {error}", fingerprint)


def refusal_reason(score: float, threshold: float) -> str:
    """The reason of a refused row: what the score and the threshold were."""
    return (f"unlike the images the model was trained on (out-of-distribution score {score:.2f} > threshold "
            f"{threshold:.2f}): not classified")


def _threshold_cell(threshold: float | None):
    return "" if threshold is None else round(float(threshold), 6)


def _row(path: Path, predictor, fingerprint: dict, probabilities=None, reason: str = "", score: float | None = None,
         refused: bool = False, threshold: float | None = None) -> dict:
    """One result row: ok (a class), refused (probabilities kept for audit, no class) or error (no outputs). Each
    answered row records the threshold it was decided with (empty: refusal was off or impossible), and every row
    the file as it was read (``fingerprint``)."""
    status = "error" if probabilities is None else "refused" if refused else "ok"
    row = {"path": str(path), "status": status, "reason": reason, "predicted_class": "",
           OOD_SCORE: "" if score is None else round(float(score), 4),
           "ood_threshold": "" if probabilities is None else _threshold_cell(threshold), "model": predictor.name,
           "model_sha256": predictor.sha256}
    for index, name in enumerate(predictor.class_names):
        row[PROBABILITY_PREFIX + name] = "" if probabilities is None else round(float(probabilities[index]), 6)
    if status == "ok":
        row["predicted_class"] = predictor.class_names[int(np.argmax(probabilities))]
    row.update(fingerprint)
    return row


def error_row(path: str | Path, predictor, reason: str, fingerprint: dict | None = None) -> dict:
    """The row of a file that has no answer (status error), with the reason.

    Args:
        path: the file, as the row names it.
        predictor: the model (its name and sha256 go in the row).
        reason: why there is no answer.
        fingerprint: the file as it was read (``results.file_fingerprint``); None: taken now.
    """
    return _row(Path(path), predictor, file_fingerprint(path) if fingerprint is None else fingerprint, reason=reason)


def answer_images(predictor, paths: list, images: list, threshold: float | None,
                  fingerprints: list[dict] | None = None) -> list[dict]:
    """Rows for decoded images: one model call, then ok, refused (score above ``threshold``) or error (NaN output).

    Args:
        predictor: the loaded ``Predictor``.
        paths: the images' files (as their rows name them).
        images: the preprocessed images, one per path.
        threshold: refuse above this out-of-distribution score; None: refuse nothing.
        fingerprints: each file as it was read (``Decoded.fingerprint``); None: taken now.

    Returns:
        One row per path, in order.
    """
    if fingerprints is None:
        fingerprints = [file_fingerprint(path) for path in paths]
    return _answer(predictor, paths, np.stack(images), threshold, fingerprints)[0]


def _answer(predictor, paths: list, batch: np.ndarray, threshold: float | None,
            fingerprints: list[dict]) -> tuple[list[dict], np.ndarray]:
    """``answer_images`` for a stacked batch (N, H, W, C), and the model's probabilities (N, K) the rows came from."""
    probabilities, scores = predictor.predict_scored(batch)
    broken = nonfinite_rows(probabilities)
    if scores is not None:
        broken |= ~np.isfinite(scores)
    rows = []
    for index, (path, probs, fingerprint) in enumerate(zip(paths, probabilities, fingerprints)):
        if broken[index]:  # never report a class for NaN probabilities (argmax of NaN is 0)
            rows.append(_row(Path(path), predictor, fingerprint, reason=NONFINITE_REASON))
            continue
        score = None if scores is None else float(scores[index])
        if threshold is not None and score is not None and score > threshold:
            rows.append(_row(Path(path), predictor, fingerprint, probs, refusal_reason(score, threshold), score,
                             refused=True, threshold=threshold))
        else:
            rows.append(_row(Path(path), predictor, fingerprint, probs, score=score, threshold=threshold))
    return rows, probabilities


def record_rows(journal, rows: list[dict], summary: InferSummary, bar=None) -> None:
    """Journal freshly answered rows (flushed: a process that dies next loses none), count them, advance the bar."""
    journal.writelines(json_line(row) for row in rows)
    journal.flush()
    summary.count(rows)
    if bar is not None:
        bar.update(len(rows))


def _same_file_key(path: str | Path) -> str:
    """One spelling per file for matching rows to files: absolute and normalised (links are not followed, so a
    link and its target stay two files, as the listing has them)."""
    return os.path.normpath(os.path.abspath(path))


_ANOTHER_OUT = "write to another --out"


def _earlier_rows(output: Path, journal: Path, predictor) -> list[dict]:
    """The rows a ``--resume`` may keep: the journal's, and the output's unless the interrupted run was replacing it
    (``--overwrite``): those belong to the run that was being replaced. Refuses another model's rows."""
    header, journaled = read_journal(journal, _ANOTHER_OUT)
    replaced = bool(header.get("replaces_output"))
    rows = journaled if replaced else read_results(output, _ANOTHER_OUT) + journaled
    found = {(r.get("model", "?"), str(r.get("model_sha256", ""))) for r in rows}
    if header.get("model_sha256"):
        found.add(("the interrupted run's model", header["model_sha256"]))
    others = {(name, sha) for name, sha in found if sha != predictor.sha256}
    if others:
        names = ", ".join(f"{name} (sha256 {sha[:12] or 'unknown'})" for name, sha in sorted(others))
        raise InputError(f"{output} holds rows from {names}, not from {predictor.name} (sha256 "
                         f"{predictor.sha256[:12]}): resume with that --model, or {_ANOTHER_OUT}")
    return rows


def _check_threshold(output: Path, rows: list[dict], threshold: float | None) -> None:
    """Refuse to mix rows decided with another refusal threshold into the output."""
    decided = {str(r.get("ood_threshold", "")) for r in rows if r.get("status") in ("ok", "refused")}
    earlier = sorted(decided - {str(_threshold_cell(threshold))})
    if earlier:
        now = "none (refusal off)" if threshold is None else f"{threshold:g}"
        shown = ", ".join(value or "none (refusal off)" for value in earlier)
        if len(earlier) > 1:
            same = "the earlier run's --ood-threshold or --accept-ood"
        else:
            same = "--accept-ood" if earlier == [""] else f"--ood-threshold {earlier[0]}"
        raise InputError(f"{output} holds rows decided with the refusal threshold {shown}, not {now}: resume with "
                         f"{same}, or {_ANOTHER_OUT}")


def _previous_rows(output: Path, journal: Path, listing: Listing, folder: Path, recursive: bool, predictor,
                   threshold: float | None, summary: InferSummary) -> dict:
    """The rows of an earlier run of the same model on the same folder that still hold, keyed (and re-spelled) by
    the current listing's paths. Rows of files changed since they were answered are left out (answered again), as
    are rows of files deleted since; rows of files outside this listing are refused."""
    rows = _earlier_rows(output, journal, predictor)
    _check_threshold(output, rows, threshold)
    listed = {_same_file_key(f): f for f in listing.files}
    unlisted_folders = {_same_file_key(f) for f in listing.unreadable}
    inside = _same_file_key(folder) + os.sep
    by_path, strangers, deleted = {}, [], set()
    for row in rows:  # the journal comes last: its row of a file answered again wins
        key = _same_file_key(row["path"])
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
        if not recursive and all(_same_file_key(p).startswith(inside) for p in strangers):
            cause = "they are in its sub-folders: add --recursive"
        else:
            cause = "it answers another folder, or was started from another working folder"
        raise InputError(f"{output} holds {len(strangers)} row(s) for files that are not in {folder} (e.g. "
                         f"{strangers[0]}); {cause}. Resume with the same folder and options, or {_ANOTHER_OUT}")
    kept = {path: row for path, row in by_path.items() if same_fingerprint(row, file_fingerprint(path))}
    summary.unrecorded = sum(FILE_SIZE not in row for row in by_path.values())
    summary.changed, summary.deleted = len(by_path) - len(kept) - summary.unrecorded, len(deleted)
    return kept


@contextmanager
def journal_removed_if_nothing_answered(plan: "InferPlan"):
    """Remove a fresh run's journal when the run fails before answering any file (an error found on the way, such
    as a cluster too small), so that nothing is left behind; unless the run was replacing an output, where its
    first line must keep a later --resume from keeping the replaced rows."""
    try:
        yield
    except S3FEdgeError:
        if not plan.resume and not journal_has_rows(plan.journal) and not plan.replaces_output:
            plan.journal.unlink(missing_ok=True)
        raise


def _empty_folder_error(folder: Path, recursive: bool) -> InputError:
    if not recursive and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        return InputError(f"no files directly in {folder}; pass --recursive to read its sub-folders")
    return InputError(f"no files to classify in {folder}{' or its sub-folders' if recursive else ''}; "
                      "give a folder that holds images")


@dataclass
class InferPlan:
    """What ``plan_inference`` decided before any work: the files left to classify and where rows go."""
    folder: Path
    output: Path
    journal: Path
    files: list[Path]  # still to classify
    previous: dict  # path -> row answered by an earlier run that still holds (resume)
    listing: Listing
    threshold: float | None
    resume: bool
    summary: InferSummary
    replaces_output: bool = False  # a fresh run (--overwrite) that will replace an existing output


def check_ood_threshold(value: float | None) -> None:
    """Refuse a refusal threshold that is not a finite number (NaN would turn refusal off without a word)."""
    if value is not None and not math.isfinite(value):
        raise InputError(f"--ood-threshold {value}: give a finite number (the model's own threshold is the default; "
                         "--accept-ood turns refusal off)")


def plan_inference(folder: str | Path, predictor, output: str | Path, *, batch_size: int = 32,
                   recursive: bool = False, workers: int = 4, resume: bool = False, overwrite: bool = False,
                   accept_ood: bool = False, ood_threshold: float | None = None, explain_dir: Path | None = None,
                   explain_classes: set[str] | None = None, log: Callable[[str], None] | None = None) -> InferPlan:
    """Every check of an ``infer`` run, before any work: options, the output, the listing and what an earlier
    run answered; a fresh run's journal is started here. Arguments as ``infer_folder``; raises what it lists."""
    output = Path(output)
    folder = Path(folder)
    if output.suffix.lower() not in RESULT_FORMATS:
        raise InputError(f"output must end in one of {', '.join(RESULT_FORMATS)}, got {output.name!r}; choose one")
    if batch_size < 1 or workers < 1:
        raise InputError("batch size and workers must be at least 1")
    check_ood_threshold(ood_threshold)
    if ood_threshold is not None and predictor.ood_threshold is None:
        raise InputError(f"--ood-threshold: {predictor.name} has no out-of-distribution score to compare with it; "
                         "calibrate the model first with s3f-edge calibrate")
    if resume and overwrite:
        raise InputError("--resume continues the output and --overwrite replaces it: give one of them")
    ensure_writable(output, "--out")
    if explain_dir is not None:
        from s3f_edge.runtime.gradcam import check_explainable

        check_explainable(predictor, explain_classes)
        ensure_writable(explain_dir, "--explain", folder=True)
    journal = journal_path(output)
    if resume and not output.exists() and not journal.exists():
        raise InputError(f"--resume: there is nothing to continue at {output} (no results file and no journal of an "
                         "interrupted run); run the command without --resume to start")
    listing = list_inputs(folder, recursive)
    files = listing.files
    summary = InferSummary(total=len(files) + len(listing.unreadable), output=output)

    threshold = None if accept_ood else (ood_threshold if ood_threshold is not None else predictor.ood_threshold)
    previous: dict = {}
    replaces = False
    if resume:
        previous = _previous_rows(output, journal, listing, folder, recursive, predictor, threshold, summary)
        summary.skipped_as_done = len(previous)
        files = [f for f in files if str(f) not in previous]
    else:
        if not files and not listing.unreadable:
            raise _empty_folder_error(folder, recursive)
        overlays = sorted(Path(explain_dir).glob("*.gradcam.png")) if explain_dir is not None else []
        replaces = bool(refuse_existing([output], overwrite=overwrite, instead="--resume to continue them"))
        refuse_existing([journal] if journal_has_rows(journal) else [], overwrite=overwrite,
                        instead="--resume to continue them")
        refuse_existing(overlays, overwrite=overwrite, option="--explain")
        # The old output stays until the new one replaces it (atomically, at the end): a failed run loses nothing,
        # and the journal says that its rows are not to be kept by a --resume of this run.
        remove_outputs([journal, *overlays])
        output.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text(journal_header(replaces, predictor.sha256), encoding="utf-8")
    if not files and not previous and not listing.unreadable:
        raise _empty_folder_error(folder, recursive)
    output.parent.mkdir(parents=True, exist_ok=True)
    if log is not None:
        log(f"{len(files)} file(s) to classify{f', {len(previous)} already done' if previous else ''}; model "
            f"{predictor.name} ({predictor.backend}, {predictor.provider}); classes {predictor.class_names}")
        if summary.changed:
            log(f"{summary.changed} file(s) changed since an earlier run answered them: answered again")
        if summary.unrecorded:
            log(f"{summary.unrecorded} row(s) of an older s3f-edge record no file size or time, so whether their "
                "files changed cannot be told: answered again")
        if summary.deleted:
            log(f"{summary.deleted} file(s) answered by an earlier run no longer exist: their rows are dropped")
        for where, why in listing.unreadable.items():
            log(f"cannot list {where} ({why}): its files are not classified (an error row says so)")
        if predictor.ood_threshold is None:
            log("this model has no out-of-distribution score, so it cannot refuse images unlike its training "
                "images; fit one with s3f-edge calibrate")
        elif accept_ood:
            log("--accept-ood: images unlike the training images are classified too (their ood_score is kept)")
    return InferPlan(folder, output, journal, files, previous, listing, threshold, resume, summary,
                     replaces_output=not resume and replaces)


def finish_inference(plan: InferPlan, predictor) -> InferSummary:
    """Merge the earlier rows, the journal and the rows of unreadable sub-folders into the output (sorted,
    atomically), remove the journal, and return the summary with the output's error-row count."""
    done = dict(plan.previous)
    listed = {_same_file_key(f): str(f) for f in plan.listing.files}
    for row in read_journal(plan.journal, _ANOTHER_OUT)[1]:  # in order: a file answered again has its last row
        path = listed.get(_same_file_key(row["path"]))  # a resumed journal may spell a path another way
        if path is not None:
            done[path] = {**row, "path": path}
    unreadable = [error_row(where, predictor, unreadable_folder_reason(why)) for where, why in
                  plan.listing.unreadable.items()]
    plan.summary.count(unreadable)
    done.update({row["path"]: row for row in unreadable})
    write_results(plan.output, list(done.values()), predictor.class_names, predictor.name)
    plan.journal.unlink(missing_ok=True)
    plan.summary.errors_in_output = sum(row.get("status") == "error" for row in done.values())
    return plan.summary


def infer_folder(folder: str | Path, predictor, output: str | Path, batch_size: int = 32, recursive: bool = False,
                 workers: int = 4, resume: bool = False, progress: bool = True, explain_dir: Path | None = None,
                 explain_classes: set[str] | None = None, overwrite: bool = False,
                 log: Callable[[str], None] | None = None, accept_ood: bool = False,
                 ood_threshold: float | None = None) -> InferSummary:
    """Classify every file under ``folder`` with ``predictor``; write one row per file to ``output``.

    Args:
        folder: the files to classify (hidden files excluded; a file that is no image gets an error row).
        predictor: a loaded ``Predictor``.
        output: .csv, .jsonl or .json. An existing output is continued with ``resume`` (same model, same files),
            replaced with ``overwrite``, and otherwise refused.
        batch_size: images per model call.
        recursive: also classify the files of sub-folders.
        workers: parallel decoding threads.
        resume: continue an earlier run's output and journal, classifying only the files they lack.
        progress: show a progress bar on stderr.
        explain_dir: a folder for Grad-CAM overlays (.keras models only); None: no overlays.
        explain_classes: overlay only images predicted as one of these classes; None: every class.
        overwrite: replace an existing output (and the overlays in ``explain_dir``).
        log: called with lines describing the run, after every check passed.
        accept_ood: never refuse (rows still get their out-of-distribution score).
        ood_threshold: refuse above this score instead of the model's own threshold (a calibrated model only).

    Returns:
        The counts and timing (``InferSummary``).

    Raises:
        InputError: an invalid option, no file to classify, or an output to resume that another model, folder or
            refusal threshold wrote (checked before any work).
        MissingFileError: ``folder`` is not a folder.
        OutputExistsError: the output (or its journal or overlays) exists and neither ``resume`` nor ``overwrite``
            was given.
        OutputError: the output or ``explain_dir`` cannot be written.
    """
    plan = plan_inference(folder, predictor, output, batch_size=batch_size, recursive=recursive, workers=workers,
                          resume=resume, overwrite=overwrite, accept_ood=accept_ood, ood_threshold=ood_threshold,
                          explain_dir=explain_dir, explain_classes=explain_classes, log=log)
    with journal_removed_if_nothing_answered(plan):
        explainer = None
        if explain_dir is not None:
            from s3f_edge.runtime.gradcam import GradCam

            explainer = GradCam(predictor, Path(explain_dir), explain_classes)
        _classify_here(plan, predictor, batch_size, workers, progress, explainer)
    return finish_inference(plan, predictor)


def _classify_here(plan: InferPlan, predictor, batch_size: int, workers: int, progress: bool, explainer) -> None:
    """Decode in a thread pool ahead of the model through a bounded window; journal each batch's rows."""
    summary, contract = plan.summary, predictor.contract
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan.files), unit="img", desc="infer", dynamic_ncols=True)
    window = max(2 * batch_size, 2 * workers)  # decoded-but-unconsumed images held at most
    with ThreadPoolExecutor(max_workers=workers) as pool, open_journal(plan.journal) as journal_file:
        pending: deque = deque()
        remaining = iter(plan.files)
        batch_paths, batch_images, batch_fingerprints, rows = [], [], [], []

        def flush():
            if batch_images:
                batch = np.stack(batch_images)
                answered, probabilities = _answer(predictor, batch_paths, batch, plan.threshold, batch_fingerprints)
                rows.extend(answered)
                if explainer is not None:
                    explainer.explain(batch_paths, batch, probabilities)
            record_rows(journal_file, rows, summary, bar)
            if bar is not None:
                done = summary.succeeded + summary.refused + summary.failed
                bar.set_postfix(img_s=f"{done / max(time.perf_counter() - started, 1e-9):.1f}")
            batch_paths.clear()
            batch_images.clear()
            batch_fingerprints.clear()
            rows.clear()

        while True:
            while len(pending) < window:
                path = next(remaining, None)
                if path is None:
                    break
                pending.append((path, pool.submit(decode_file, path, contract)))
            if not pending:
                break
            path, future = pending.popleft()
            decoded = future.result()
            if decoded.error is not None:
                rows.append(_row(path, predictor, decoded.fingerprint, reason=decoded.error))
            else:
                batch_paths.append(path)
                batch_images.append(decoded.image)
                batch_fingerprints.append(decoded.fingerprint)
            if len(batch_images) >= batch_size or len(rows) >= batch_size:
                flush()
        flush()
    if bar is not None:
        bar.close()
    summary.seconds = time.perf_counter() - started
