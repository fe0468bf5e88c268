"""``s3f-edge infer`` as one function: the model loaded where the run needs it, the inference loop on this
machine or a Ray cluster, and the review page of its rows."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s3f_edge.errors import InputError
from s3f_edge.runtime.infer import InferOptions, InferSummary, run_inference
from s3f_edge.runtime.predictor import Predictor, default_model


@dataclass
class InferOutcome:
    """What an ``infer`` run gives: its counts, the model as this process knew it, and the review page."""
    summary: InferSummary
    predictor: Predictor
    page: Path | None = None
    reports: object | None = None  # the DICOM reports written (``dicom.reports.StructuredReports``), or None


def _predictor_and_executor(options: InferOptions, model: Path, log):
    if options.cluster is not None:  # the driver of a cluster run may lack the GPU a TensorRT engine needs
        from s3f_edge.runtime.cluster import RayExecutor, driver_model

        predictor = driver_model(model, options.providers, options.metadata)
        return predictor, RayExecutor(predictor, model, options, log)
    from s3f_edge.runtime.formats import load_predictor
    from s3f_edge.runtime.local import LocalExecutor

    predictor = load_predictor(model, providers=options.providers, metadata=options.metadata)
    return predictor, LocalExecutor(predictor, options)


def infer(options: InferOptions, log: Callable[[str], None] | None = None,
          answered: Callable[..., None] | None = None) -> InferOutcome:
    """Classify every file of ``options.folder``: one row per file in ``options.output``, and the review page
    ``options.report`` when asked for.

    Example:
        >>> from s3f_edge.runtime.infer import InferOptions
        >>> from s3f_edge.tasks.infer import infer
        >>> outcome = infer(InferOptions("scans/", "results.csv", report="review.html"))  # doctest: +SKIP
        >>> outcome.summary.refused  # doctest: +SKIP

    Args:
        options: the run's ``InferOptions`` (``model`` None: the bundled model; ``cluster``: on Ray).
        log: called with lines describing the run, after every check passed.
        answered: called with the summary, the model and the DICOM reports (or None) once the results file is
            written, before the review page (which can take a while for a large folder).

    Returns:
        The ``InferOutcome``.

    Raises:
        InputError: the options contradict each other, or what ``run_inference`` refuses before any work.
        OutputExistsError, OutputError: the review page exists (without overwrite or resume) or cannot be written,
            checked before the work; the results file as ``run_inference`` says.
    """
    problems = options.usage_problems()
    if problems:
        raise InputError(problems[0])
    model = options.model or default_model()
    if options.report is not None:  # checked before the long work; a resumed run's page is redrawn from all rows
        from s3f_edge.report.results_page import check_report_path

        check_report_path(options.report, options.overwrite or options.resume)
    predictor, executor = _predictor_and_executor(options, model, log)
    reports = None
    if options.dicom_sr is not None:
        from s3f_edge.dicom.identity import ModelIdentity
        from s3f_edge.dicom.reports import StructuredReports

        reports = StructuredReports(options.dicom_sr, ModelIdentity.from_predictor(predictor))
    summary = run_inference(options, predictor, executor, log, sinks=(reports,) if reports else ())
    if answered is not None:
        answered(summary, predictor, reports)
    page = None
    if options.report is not None:
        from s3f_edge.report.results_page import write_results_report

        run = {"Folder": str(options.folder), "Backend": f"{predictor.backend} ({predictor.provider})",
               "Run": f"{summary.answered} file(s) in {summary.seconds:.1f} s"
                      + (f", {summary.skipped_as_done} answered by an earlier run" if summary.skipped_as_done else "")}
        page = write_results_report(summary.output, options.report, explain_dir=options.explain_dir, run=run,
                                    workers=options.workers, progress=options.progress, overwrite=True,
                                    require_overlays=False, dicom_sr=options.dicom_sr)
    return InferOutcome(summary, predictor, page, reports)
