"""`s3f-edge infer`: every file in a folder gets a row — a prediction or the reason it has none.

Decoding runs in a thread pool ahead of inference through a bounded window of futures, so memory
holds at most a few batches of pixels whatever the folder size. Rows go to a journal beside the
output as each batch finishes; the final file is written once, sorted by path, to a temporary file
that is then renamed, so a crash never leaves a half-written output and ``resume`` knows what is done.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3f_edge.contract import OOD_SCORE
from s3f_edge.data.preprocess import IMAGE_SUFFIXES, ImageDecodeError, load_image
from s3f_edge.errors import InputError, MissingFileError
from s3f_edge.outputs import atomic_open, ensure_writable, read_csv, refuse_existing, remove_outputs, write_csv
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


def discover_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Every file (and broken link) under ``folder``, sorted by path; hidden files excluded.

    Args:
        folder: the folder to list.
        recursive: also list its sub-folders' files (hidden folders excluded); else only the files directly in it.

    Returns:
        The files, whatever their suffix, sorted by their path as text.

    Raises:
        MissingFileError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in candidates
             if not any(part.startswith(".") for part in p.relative_to(folder).parts)
             and (p.is_file() or (p.is_symlink() and not p.exists()))]
    return sorted(files, key=lambda p: str(p))


def decode_file(path: Path, contract) -> tuple[np.ndarray | None, str | None]:
    """(preprocessed image, None), or (None, the reason it has no image): never raises for a bad file."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, f"unsupported format {path.suffix or '(no suffix)'!r}; supported: {', '.join(IMAGE_SUFFIXES)}"
    try:
        return load_image(path, contract), None
    except ImageDecodeError as error:
        return None, str(error)
    except (OSError, MemoryError, ValueError) as error:  # never let one file stop the run
        return None, f"{type(error).__name__}: {error}"


STATUSES = ("ok", "refused", "error")


def _columns(class_names: list[str]) -> list[str]:
    return ["path", "status", "reason", "predicted_class", *[f"prob_{name}" for name in class_names], OOD_SCORE,
            "ood_threshold", "model", "model_sha256"]


def refusal_reason(score: float, threshold: float) -> str:
    """The reason of a refused row: what the score and the threshold were."""
    return (f"unlike the images the model was trained on (out-of-distribution score {score:.2f} > threshold "
            f"{threshold:.2f}): not classified")


def _threshold_cell(threshold: float | None):
    return "" if threshold is None else round(float(threshold), 6)


def _row(path: Path, predictor, probabilities=None, reason: str = "", score: float | None = None,
         refused: bool = False, threshold: float | None = None) -> dict:
    """One result row: ok (a class), refused (probabilities kept for audit, no class) or error (no outputs). Each
    answered row records the threshold it was decided with (empty: refusal was off or impossible)."""
    status = "error" if probabilities is None else "refused" if refused else "ok"
    row = {"path": str(path), "status": status, "reason": reason, "predicted_class": "",
           OOD_SCORE: "" if score is None else round(float(score), 4),
           "ood_threshold": "" if probabilities is None else _threshold_cell(threshold), "model": predictor.name,
           "model_sha256": predictor.sha256}
    for index, name in enumerate(predictor.class_names):
        row[f"prob_{name}"] = "" if probabilities is None else round(float(probabilities[index]), 6)
    if status == "ok":
        row["predicted_class"] = predictor.class_names[int(np.argmax(probabilities))]
    return row


def error_row(path: str | Path, predictor, reason: str) -> dict:
    """The row of a file that has no answer (status error), with the reason."""
    return _row(Path(path), predictor, reason=reason)


def answer_images(predictor, paths: list, images: list, threshold: float | None) -> list[dict]:
    """Rows for decoded images: one model call, then ok, refused (score above ``threshold``) or error (NaN output).

    Args:
        predictor: the loaded ``Predictor``.
        paths: the images' files (as their rows name them).
        images: the preprocessed images, one per path.
        threshold: refuse above this out-of-distribution score; None: refuse nothing.

    Returns:
        One row per path, in order.
    """
    return _answer(predictor, paths, np.stack(images), threshold)[0]


def _answer(predictor, paths: list, batch: np.ndarray, threshold: float | None) -> tuple[list[dict], np.ndarray]:
    """``answer_images`` for a stacked batch (N, H, W, C), and the model's probabilities (N, K) the rows came from."""
    probabilities, scores = predictor.predict_scored(batch)
    broken = nonfinite_rows(probabilities)
    if scores is not None:
        broken |= ~np.isfinite(scores)
    rows = []
    for index, (path, probs) in enumerate(zip(paths, probabilities)):
        if broken[index]:  # never report a class for NaN probabilities (argmax of NaN is 0)
            rows.append(_row(Path(path), predictor, reason=NONFINITE_REASON))
            continue
        score = None if scores is None else float(scores[index])
        if threshold is not None and score is not None and score > threshold:
            rows.append(_row(Path(path), predictor, probs, refusal_reason(score, threshold), score, refused=True,
                             threshold=threshold))
        else:
            rows.append(_row(Path(path), predictor, probs, score=score, threshold=threshold))
    return rows, probabilities


def record_rows(journal, rows: list[dict], summary: InferSummary, bar=None) -> None:
    """Journal freshly answered rows (flushed: a process that dies next loses none), count them, advance the bar."""
    journal.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    journal.flush()
    summary.count(rows)
    if bar is not None:
        bar.update(len(rows))


def journal_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial.jsonl")


def read_rows(path: Path) -> list[dict]:
    """Rows of an existing output (csv, jsonl or json) or journal; a torn last journal line is ignored.

    Raises:
        InputError: the file is not an s3f-edge results file.
    """
    if not path.exists():
        return []
    try:
        if path.suffix.lower() == ".csv":
            rows = read_csv(path)
        elif path.suffix.lower() == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))["results"]
        else:
            rows = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # the process died while writing this line; the file will be redone
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not an s3f-edge results file ({type(error).__name__}: {error}); choose another "
                         "--out") from None
    if not all(isinstance(row, dict) and "path" in row for row in rows):
        raise InputError(f"{path} is not an s3f-edge results file (rows without a path); choose another --out")
    return rows


def write_output(output: Path, rows: list[dict], columns: list[str], model_name: str) -> None:
    """Write all rows sorted by path to a temporary file, then rename it over ``output``. CSV cells that a
    spreadsheet would run as formulas are neutralised (``s3f_edge.outputs``); JSON keeps every value as is."""
    rows = sorted(rows, key=lambda r: r["path"])
    if output.suffix.lower() == ".csv":
        write_csv(output, columns, rows)
        return
    with atomic_open(output, "w", encoding="utf-8") as stream:
        if output.suffix.lower() == ".jsonl":
            stream.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            json.dump({"model": model_name, "results": rows}, stream, ensure_ascii=False, indent=1)


def _same_file_key(path: str | Path) -> str:
    """One spelling per file for matching rows to files: absolute and normalised (links are not followed, so a
    link and its target stay two files, as the listing has them)."""
    return os.path.normpath(os.path.abspath(path))


def _previous_rows(output: Path, journal: Path, listed: dict[str, str], folder: Path, recursive: bool,
                   predictor, threshold: float | None) -> dict:
    """The rows an earlier run of the same model on the same folder wrote, keyed (and re-spelled) by the
    current listing's paths (``listed``: same-file key -> path). Refuses rows of another model, of files
    this listing does not hold, or decided with another refusal threshold."""
    rows = read_rows(output) + read_rows(journal)
    decided = {str(r.get("ood_threshold", "")) for r in rows if r.get("status") in ("ok", "refused")}
    if decided - {str(_threshold_cell(threshold))}:
        earlier = ", ".join(sorted(value or "none (refusal off)" for value in decided))
        now = "none (refusal off)" if threshold is None else f"{threshold:g}"
        raise InputError(f"{output} holds rows decided with the refusal threshold {earlier}, not {now}; resume with "
                         "the same --ood-threshold or --accept-ood, or write to another --out")
    others = {(r.get("model", "?"), r.get("model_sha256", "")) for r in rows
              if r.get("model_sha256") != predictor.sha256}
    if others:
        names = ", ".join(f"{name} (sha256 {sha[:12] or 'unknown'})" for name, sha in sorted(others))
        raise InputError(f"{output} holds rows from {names}, not from {predictor.name} (sha256 "
                         f"{predictor.sha256[:12]}); resume with that model, or write to another --out")
    by_path, strangers = {}, []
    for row in rows:
        path = listed.get(_same_file_key(row["path"]))
        if path is None:
            strangers.append(row["path"])
        else:
            by_path[path] = {**row, "path": path}
    if strangers:
        scope = "or its sub-folders " if recursive else ""
        causes = "another folder, or was started from another working folder" + ("" if recursive else
                                                                                  " or with --recursive")
        raise InputError(f"{output} holds {len(strangers)} row(s) for files that are not in {folder} {scope}"
                         f"(e.g. {strangers[0]}): it answers {causes}. Resume with the same folder and options, or "
                         "write to another --out")
    return by_path


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
    previous: dict  # path -> row answered by an earlier run (resume)
    listed: dict  # same-file key -> path of the listing (resume)
    threshold: float | None
    resume: bool
    summary: InferSummary


def plan_inference(folder: str | Path, predictor, output: str | Path, *, batch_size: int = 32,
                   recursive: bool = False, workers: int = 4, resume: bool = False, overwrite: bool = False,
                   accept_ood: bool = False, ood_threshold: float | None = None, explain_dir: Path | None = None,
                   explain_classes: set[str] | None = None, log: Callable[[str], None] | None = None) -> InferPlan:
    """Every check of an ``infer`` run, before any work: options, the output, the listing and what an earlier
    run answered. Arguments as ``infer_folder``; raises what it lists."""
    output = Path(output)
    folder = Path(folder)
    if output.suffix.lower() not in RESULT_FORMATS:
        raise InputError(f"output must end in one of {', '.join(RESULT_FORMATS)}, got {output.name!r}; choose one")
    if batch_size < 1 or workers < 1:
        raise InputError("batch size and workers must be at least 1")
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
    files = discover_files(folder, recursive)
    summary = InferSummary(total=len(files), output=output)

    threshold = None if accept_ood else (ood_threshold if ood_threshold is not None else predictor.ood_threshold)
    previous: dict = {}
    listed: dict[str, str] = {}
    if resume:
        listed = {_same_file_key(f): str(f) for f in files}
        previous = _previous_rows(output, journal, listed, folder, recursive, predictor, threshold)
        summary.skipped_as_done = len(previous)
        files = [f for f in files if str(f) not in previous]
    else:
        if not files:
            raise _empty_folder_error(folder, recursive)
        overlays = sorted(Path(explain_dir).glob("*.gradcam.png")) if explain_dir is not None else []
        refuse_existing([output, journal, *overlays], overwrite=overwrite, instead="--resume to continue them")
        # The old output stays until the new one replaces it (atomically, at the end): a failed run loses nothing.
        remove_outputs([journal, *overlays])
    if not files and not previous:
        raise _empty_folder_error(folder, recursive)
    output.parent.mkdir(parents=True, exist_ok=True)
    if log is not None:
        log(f"{len(files)} file(s) to classify{f', {len(previous)} already done' if previous else ''}; model "
            f"{predictor.name} ({predictor.backend}, {predictor.provider}); classes {predictor.class_names}")
        if predictor.ood_threshold is None:
            log("this model has no out-of-distribution score, so it cannot refuse images unlike its training "
                "images; fit one with s3f-edge calibrate")
        elif accept_ood:
            log("--accept-ood: images unlike the training images are classified too (their ood_score is kept)")
    return InferPlan(folder, output, journal, files, previous, listed, threshold, resume, summary)


def finish_inference(plan: InferPlan, predictor) -> InferSummary:
    """Merge the earlier rows and the journal into the output (sorted, atomically), remove the journal, and
    return the summary with the output's error-row count."""
    done = dict(plan.previous)
    for row in read_rows(plan.journal):  # a resumed journal may spell its earlier rows' paths another way
        path = plan.listed.get(_same_file_key(row["path"]), row["path"]) if plan.resume else row["path"]
        done[path] = {**row, "path": path}
    write_output(plan.output, list(done.values()), _columns(predictor.class_names), predictor.name)
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
    with ThreadPoolExecutor(max_workers=workers) as pool, open(plan.journal, "a", encoding="utf-8") as journal_file:
        pending: deque = deque()
        remaining = iter(plan.files)
        batch_paths, batch_images, rows = [], [], []

        def flush():
            if batch_images:
                batch = np.stack(batch_images)
                answered, probabilities = _answer(predictor, batch_paths, batch, plan.threshold)
                rows.extend(answered)
                if explainer is not None:
                    explainer.explain(batch_paths, batch, probabilities)
            record_rows(journal_file, rows, summary, bar)
            if bar is not None:
                done = summary.succeeded + summary.refused + summary.failed
                bar.set_postfix(img_s=f"{done / max(time.perf_counter() - started, 1e-9):.1f}")
            batch_paths.clear()
            batch_images.clear()
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
            image, error = future.result()
            if error is not None:
                rows.append(_row(path, predictor, reason=error))
            else:
                batch_paths.append(path)
                batch_images.append(image)
            if len(batch_images) >= batch_size or len(rows) >= batch_size:
                flush()
        flush()
    if bar is not None:
        bar.close()
    summary.seconds = time.perf_counter() - started
