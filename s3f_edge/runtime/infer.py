"""`s3f-edge infer`: every file in a folder gets a row — a prediction or the reason it has none.

One loop for every way of answering (``run_inference``): it plans before any work (the options, the output, the
listing, what an earlier run answered), journals each batch of rows as it arrives (a process that dies loses
nothing answered, and ``--resume`` continues), counts, shows progress, and finishes: the output written once,
sorted by path, to a temporary file renamed over it. An executor only turns the planned files into batches of
rows: ``LocalExecutor`` on this machine (``runtime/local.py``), ``RayExecutor`` on a Ray cluster
(``runtime/cluster.py``).
"""
from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from s3f_edge.errors import BackendError, InputError, S3FEdgeError
from s3f_edge.outputs import ensure_writable, refuse_existing, remove_outputs
from s3f_edge.results import (
    journal_has_rows,
    journal_header,
    journal_path,
    json_line,
    open_journal,
    read_journal,
    write_results,
)
from s3f_edge.runtime.answers import error_row
from s3f_edge.runtime.formats import RESULT_FORMATS
from s3f_edge.runtime.inputs import Listing, list_inputs, same_file_key, unreadable_folder_reason
from s3f_edge.runtime.resume import ANOTHER_OUT, previous_rows

LOCAL = "local"  # a Ray cluster address: start a Ray instance on this machine for the run


@dataclass
class ClusterOptions:
    """Where and how wide ``infer --ray`` runs: a Ray address (``LOCAL``, ``auto`` or host:port), the model
    replicas (actors) and the CPUs and GPUs Ray reserves for each."""
    address: str = LOCAL
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0


@dataclass
class InferOptions:
    """Everything ``infer`` is asked to do: the command line's options, and the Python API's.

    Attributes:
        folder: the files to classify (hidden files excluded; a file that is no image gets an error row).
        output: .csv, .jsonl or .json. An existing output is continued with ``resume`` (same model, same files),
            replaced with ``overwrite``, and otherwise refused.
        model: the model file; None: the bundled model.
        providers: ONNX Runtime providers in order of preference; None: the best available.
        class_names: class names for a model without s3f-edge metadata.
        model_metadata: class names and preprocessing overriding the model file's own (``load_predictor``'s
            ``metadata``); ``class_names`` is the command line's way to give the names alone.
        batch_size: images per model call.
        recursive: also classify the files of sub-folders.
        workers: parallel decoding threads (per actor on a cluster).
        resume: continue an earlier run's output and journal, classifying only the files they lack.
        overwrite: replace an existing output (and the overlays in ``explain_dir``, and the ``report`` page).
        accept_ood: never refuse (rows still get their out-of-distribution score).
        ood_threshold: refuse above this score instead of the model's own threshold (a calibrated model only).
        explain_dir: a folder for Grad-CAM overlays (.keras models, this machine only); None: no overlays.
        explain_classes: overlay only images predicted as one of these classes; None: every class.
        report: also write a review page there (.html).
        dicom_sr: a folder for a DICOM Structured Report per answered DICOM input (``s3f_edge.dicom``).
        progress: show a progress bar on stderr.
        cluster: run on a Ray cluster; None: on this machine.
    """
    folder: Path
    output: Path = Path("results.csv")
    model: Path | None = None
    providers: list[str] | None = None
    class_names: list[str] | None = None
    model_metadata: dict | None = None
    batch_size: int = 32
    recursive: bool = False
    workers: int = 4
    resume: bool = False
    overwrite: bool = False
    accept_ood: bool = False
    ood_threshold: float | None = None
    explain_dir: Path | None = None
    explain_classes: set[str] | None = None
    report: Path | None = None
    dicom_sr: Path | None = None
    progress: bool = True
    cluster: ClusterOptions | None = None

    def __post_init__(self):
        for name in ("folder", "output", "model", "explain_dir", "report", "dicom_sr"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))

    def usage_problems(self) -> list[str]:
        """What is wrong with these options from the options alone (the command line calls them usage errors)."""
        problems = []
        if self.resume and self.overwrite:
            problems.append("--resume continues --out and --overwrite replaces it: give one of them")
        if self.accept_ood and self.ood_threshold is not None:
            problems.append("--accept-ood refuses nothing and --ood-threshold sets what to refuse: give one of them")
        if self.ood_threshold is not None and not math.isfinite(self.ood_threshold):
            problems.append(f"--ood-threshold {self.ood_threshold}: give a finite number (the model's own threshold "
                            "is the default; --accept-ood turns refusal off)")
        if self.batch_size < 1 or self.workers < 1:
            problems.append("--batch-size and --workers must be at least 1")
        if self.cluster is not None and self.explain_dir is not None:
            problems.append("--explain runs on this machine only: drop --ray, or --explain")
        cluster = self.cluster
        if cluster is not None and (cluster.actors < 1 or not cluster.cpus_per_actor > 0 or
                                    not cluster.gpus_per_actor >= 0):
            problems.append("--ray-actors must be at least 1, --ray-cpus above 0 and --ray-gpus at least 0")
        return problems

    @property
    def metadata(self) -> dict | None:
        """What overrides the model file's own metadata (``load_predictor``'s ``metadata``)."""
        if self.class_names:
            return {**(self.model_metadata or {}), "class_names": self.class_names}
        return self.model_metadata


@dataclass
class InferSummary:
    """The counts and timing of one ``infer`` run."""
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
    def answered(self) -> int:
        """Files answered by this run (ok, refused or error)."""
        return self.succeeded + self.refused + self.failed

    @property
    def images_per_second(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0


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

    def add(self, files: list[Path]) -> None:
        """Files that appeared in the folder after planning (a DICOM node's spool): the next ``answer_planned``
        answers them, and only them; ``finish_inference`` writes their rows with the others."""
        known = {str(path) for path in self.listing.files}
        self.listing.files += [path for path in files if str(path) not in known]
        self.files = list(files)
        self.summary.total = len(self.listing.files) + len(self.listing.unreadable)


class RowSink(Protocol):
    """What else a run makes of its rows (a DICOM report per image, ...), batch by batch, before they are journaled:
    a process killed in between answers those files again on --resume, so a sink's outputs are named so that
    writing one twice replaces it. A sink may add to a row's reason (why it made nothing of it)."""

    def accept(self, rows: list[dict]) -> None:
        """Make what this sink makes of ``rows`` (fresh answers of this run)."""


class Executor(Protocol):
    """What turns the planned files into rows: this machine, a Ray cluster, or another way of answering."""

    label: str  # the progress bar's
    job: str  # what the messages call a run of it ("the run", "the Ray job")
    shows_rate: bool  # whether the progress bar adds the images per second since the start
    sound_when: str  # when to try again after a failure that answered nothing ("the cluster is sound")

    def session(self, plan: InferPlan) -> AbstractContextManager:
        """What must be up while the rows come (a cluster joined, checked, and left afterwards); entered before the
        progress bar and the clock start."""

    def batches(self, plan: InferPlan) -> Iterator[list[dict]]:
        """Rows for ``plan.files``, a batch at a time, in any order; a file may come twice (a retried batch)."""


def _empty_folder_error(folder: Path, recursive: bool) -> InputError:
    if not recursive and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        return InputError(f"no files directly in {folder}; pass --recursive to read its sub-folders")
    return InputError(f"no files to classify in {folder}{' or its sub-folders' if recursive else ''}; "
                      "give a folder that holds images")


def _check_options(options: InferOptions, predictor) -> None:
    problems = options.usage_problems()
    if problems:
        raise InputError(problems[0])
    if options.output.suffix.lower() not in RESULT_FORMATS:
        raise InputError(f"output must end in one of {', '.join(RESULT_FORMATS)}, got {options.output.name!r}; "
                         "choose one")
    if options.ood_threshold is not None and predictor.ood_threshold is None:
        raise InputError(f"--ood-threshold: {predictor.name} has no out-of-distribution score to compare with it; "
                         "calibrate the model first with s3f-edge calibrate")
    ensure_writable(options.output, "--out")
    if options.explain_dir is not None:
        from s3f_edge.runtime.gradcam import check_explainable

        check_explainable(predictor, options.explain_classes)
        ensure_writable(options.explain_dir, "--explain", folder=True)
    if options.dicom_sr is not None:
        ensure_writable(options.dicom_sr, "--dicom-sr", folder=True)


def _start_journal(options: InferOptions, journal: Path, predictor) -> bool:
    """Refuse earlier results unless ``--overwrite``, then start a fresh run's journal; returns whether the run
    replaces an existing output. The old output stays until the new one replaces it (atomically, at the end): a
    failed run loses nothing, and the journal's first line keeps a ``--resume`` of this run from its rows."""
    overlays = sorted(options.explain_dir.glob("*.gradcam.png")) if options.explain_dir is not None else []
    reports = sorted(options.dicom_sr.glob("*.dcm")) if options.dicom_sr is not None else []
    replaces = bool(refuse_existing([options.output], overwrite=options.overwrite, instead="--resume to continue them"))
    refuse_existing([journal] if journal_has_rows(journal) else [], overwrite=options.overwrite,
                    instead="--resume to continue them")
    refuse_existing(overlays, overwrite=options.overwrite, option="--explain")
    refuse_existing(reports, overwrite=options.overwrite, option="--dicom-sr", instead="--resume to continue them")
    remove_outputs([journal, *overlays, *reports])
    options.output.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(journal_header(replaces, predictor.sha256), encoding="utf-8")
    return replaces


def _describe(plan: InferPlan, predictor, options: InferOptions, log: Callable[[str], None]) -> None:
    summary = plan.summary
    log(f"{len(plan.files)} file(s) to classify{f', {len(plan.previous)} already done' if plan.previous else ''}; "
        f"model {predictor.name} ({predictor.backend}, {predictor.provider}); classes {predictor.class_names}")
    if summary.changed:
        log(f"{summary.changed} file(s) changed since an earlier run answered them: answered again")
    if summary.unrecorded:
        log(f"{summary.unrecorded} row(s) of an older s3f-edge record no file size or time, so whether their files "
            "changed cannot be told: answered again")
    if summary.deleted:
        log(f"{summary.deleted} file(s) answered by an earlier run no longer exist: their rows are dropped")
    for where, why in plan.listing.unreadable.items():
        log(f"cannot list {where} ({why}): its files are not classified (an error row says so)")
    if predictor.ood_threshold is None:
        log("this model has no out-of-distribution score, so it cannot refuse images unlike its training images; "
            "fit one with s3f-edge calibrate")
    elif options.accept_ood:
        log("--accept-ood: images unlike the training images are classified too (their ood_score is kept)")


def plan_inference(options: InferOptions, predictor, log: Callable[[str], None] | None = None) -> InferPlan:
    """Every check of an ``infer`` run, before any work: the options, the output, the listing and what an earlier
    run answered; a fresh run's journal is started here.

    Args:
        options: the run's ``InferOptions``.
        predictor: the model (its name, sha256, classes and threshold decide the rows).
        log: called with lines describing the run, after every check passed.

    Returns:
        The ``InferPlan``.

    Raises:
        InputError: an invalid option, no file to classify, nothing to resume, or an output to resume that another
            model, folder or refusal threshold wrote.
        MissingFileError: ``options.folder`` is not a folder.
        OutputExistsError: the output (or its journal or overlays) exists and neither resume nor overwrite was given.
        OutputError: the output or the overlays' folder cannot be written.
    """
    _check_options(options, predictor)
    journal = journal_path(options.output)
    if options.resume and not options.output.exists() and not journal.exists():
        raise InputError(f"--resume: there is nothing to continue at {options.output} (no results file and no "
                         "journal of an interrupted run); run the command without --resume to start")
    listing = list_inputs(options.folder, options.recursive)
    summary = InferSummary(total=len(listing.files) + len(listing.unreadable), output=options.output)
    threshold = None if options.accept_ood else (
        options.ood_threshold if options.ood_threshold is not None else predictor.ood_threshold)
    previous, replaces = {}, False
    if options.resume:
        previous = previous_rows(options.output, journal, listing, options.folder, options.recursive, predictor,
                                 threshold, summary)
        summary.skipped_as_done = len(previous)
    elif not listing.files and not listing.unreadable:
        raise _empty_folder_error(options.folder, options.recursive)
    else:
        replaces = _start_journal(options, journal, predictor)
    files = [f for f in listing.files if str(f) not in previous]
    if not files and not previous and not listing.unreadable:
        raise _empty_folder_error(options.folder, options.recursive)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    for folder in (options.explain_dir, options.dicom_sr):  # the review page looks for them even when empty
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    plan = InferPlan(options.folder, options.output, journal, files, previous, listing, threshold, options.resume,
                     summary, replaces_output=replaces)
    if log is not None:
        _describe(plan, predictor, options, log)
    return plan


def how_to_continue(plan: InferPlan, once: str = "the cause is fixed") -> str:
    """What to do after a run failed: continue from the journal, or (nothing answered) start again ``once``."""
    if journal_has_rows(plan.journal) or plan.resume:
        return f"the rows already answered are kept in {plan.journal.name}: run the same command with --resume"
    return f"no file was answered: run the same command again once {once}"


@contextmanager
def journal_removed_if_nothing_answered(plan: InferPlan):
    """Remove a fresh run's journal when the run fails before answering any file (an error found on the way, such
    as a cluster too small), so that nothing is left behind; unless the run was replacing an output, where its
    first line must keep a later --resume from keeping the replaced rows."""
    try:
        yield
    except S3FEdgeError:
        if not plan.resume and not journal_has_rows(plan.journal) and not plan.replaces_output:
            plan.journal.unlink(missing_ok=True)
        raise


def record_rows(journal, rows: list[dict], summary: InferSummary, bar=None) -> None:
    """Journal freshly answered rows (flushed: a process dying next loses none), count them, move the progress bar."""
    journal.writelines(json_line(row) for row in rows)
    journal.flush()
    summary.count(rows)
    if bar is not None:
        bar.update(len(rows))


@contextmanager
def _progress_bar(total: int, label: str, shown: bool):
    if not shown:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="img", desc=label, dynamic_ncols=True) as bar:
        yield bar


def answer_planned(plan: InferPlan, executor: Executor, progress: bool = True, sinks: tuple[RowSink, ...] = ()) -> None:
    """Turn every planned file into a journaled row with ``executor``: the loop every executor shares. Each batch's
    fresh rows go to the ``sinks`` first, then to the journal.

    A file answered twice (an executor that retried a batch) keeps its first row, counted once; a run that ends
    with a planned file unanswered is an error, never an output short of rows.

    Raises:
        BackendError: the executor ended without answering every planned file.
    """
    planned = {str(path) for path in plan.files}
    answered: set[str] = set()
    with executor.session(plan):
        started = time.perf_counter()
        try:
            with _progress_bar(len(plan.files), executor.label, progress) as bar, \
                    open_journal(plan.journal) as journal, closing(executor.batches(plan)) as batches:
                for batch in batches:
                    rows = [row for row in batch if row["path"] not in answered]
                    answered.update(row["path"] for row in rows)
                    for sink in sinks:
                        sink.accept(rows)
                    record_rows(journal, rows, plan.summary, bar)
                    if bar is not None and executor.shows_rate:
                        rate = plan.summary.answered / max(time.perf_counter() - started, 1e-9)
                        bar.set_postfix(img_s=f"{rate:.1f}")
        finally:
            plan.summary.seconds = time.perf_counter() - started
    missing = len(planned - answered)
    if missing:
        raise BackendError(f"{executor.job} ended with {missing} of {len(planned)} file(s) unanswered; "
                           f"{how_to_continue(plan, executor.sound_when)}")


def finish_inference(plan: InferPlan, predictor) -> InferSummary:
    """Merge the earlier rows, the journal and the rows of unreadable sub-folders into the output (sorted,
    atomically), remove the journal, and return the summary with the output's error-row count."""
    done = dict(plan.previous)
    listed = {same_file_key(f): str(f) for f in plan.listing.files}
    for row in read_journal(plan.journal, ANOTHER_OUT)[1]:  # in order: a file answered again has its last row
        path = listed.get(same_file_key(row["path"]))  # a resumed journal may spell a path another way
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


def run_inference(options: InferOptions, predictor, executor: Executor, log: Callable[[str], None] | None = None,
                  sinks: tuple[RowSink, ...] = ()) -> InferSummary:
    """Plan, answer every planned file with ``executor``, and write the output: one ``infer`` run.

    Args:
        options: the run's ``InferOptions``.
        predictor: the model as this process knows it (its name, sha256, classes and threshold decide the rows).
        executor: what answers the files (``LocalExecutor``, ``RayExecutor``).
        log: called with lines describing the run, after every check passed.
        sinks: what else the run makes of its rows (``RowSink``), e.g. DICOM reports.

    Returns:
        The counts and timing (``InferSummary``).

    Raises:
        What ``plan_inference`` raises, before any work; ``BackendError`` when the executor fails.
    """
    plan = plan_inference(options, predictor, log)
    with journal_removed_if_nothing_answered(plan):
        if plan.files:
            answer_planned(plan, executor, options.progress, sinks)
    return finish_inference(plan, predictor)
