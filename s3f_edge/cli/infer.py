"""`s3f-edge infer FOLDER/`: one result row per file, on this machine or a Ray cluster."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from s3f_edge.cli.common import (
    names,
    suffix,
    table,
)
from s3f_edge.cli.support import (
    EXIT_SOME_FILES_FAILED,
    AliasedOption,
    Command,
    ExistingPath,
    FiniteFloat,
    FolderAfterOptionalValue,
    OutputPath,
    overwrite_option,
    set_interrupt_hint,
)
from s3f_edge.runtime.formats import MODEL_SUFFIXES, RESULT_FORMATS


def _ray_address(ctx, param, value: str | None) -> str | None:
    """--ray [ADDRESS]: this machine, auto, or host:port; a malformed address is a usage error."""
    if value is None:
        return None
    import os

    from s3f_edge.runtime.cluster import address_problem

    problem = address_problem(value)
    if problem and os.path.isdir(value):  # `infer --ray FOLDER`: the option took the folder as its address
        raise click.UsageError(f"--ray took {value!r} as its value: put --ray after FOLDER", ctx)
    if problem:
        raise click.BadParameter(problem)
    return value


def _interrupt_hint(output: Path, overwrite: bool) -> str | None:
    """What Ctrl-C says: how to continue once the run has a journal; nothing before (the model was loading)."""
    from s3f_edge.results import journal_path

    if not journal_path(output).exists():
        return None
    if overwrite:
        return "rows already answered are kept; run the same command with --resume (instead of --overwrite) to continue"
    return "rows already answered are kept; run the same command with --resume to continue"


def _print_summary(summary, predictor, reports) -> None:
    """The counts per class and status, as soon as the results file is written (before any review page)."""
    rows = [[name, summary.per_class.get(name, 0)] for name in predictor.class_names]
    rows += [["(refused)", summary.refused], ["(errors)", summary.failed]]
    click.echo(table(["class", "files"], rows))
    done = f", {summary.skipped_as_done} already done" if summary.skipped_as_done else ""
    if summary.errors_in_output > summary.failed:
        done += f" ({summary.errors_in_output - summary.failed} of them error rows)"
    click.echo(f"\n{summary.succeeded} ok, {summary.refused} refused, {summary.failed} failed{done}; "
               f"{summary.images_per_second:.1f} images/s; results: {summary.output}")
    if reports is not None:
        without = f"; {reports.without} DICOM file(s) got none (their row's reason says why)" if reports.without else ""
        click.echo(f"DICOM reports: {reports.written} written to {reports.out_dir}{without}")


@click.command("infer", cls=Command)
@click.argument("folder", type=ExistingPath(file_okay=False, path_type=Path), cls=FolderAfterOptionalValue)
@click.option("--model", "model_path", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              callback=suffix(*MODEL_SUFFIXES, what="--model"),
              help=f"A {', '.join(MODEL_SUFFIXES)} model exported by s3f-edge (default: the bundled model, "
                   "if this installation has one).")
@click.option("--batch-size", "--batch", "batch_size", cls=AliasedOption, type=click.IntRange(1), default=32,
              show_default=True, help="Images per model call.")
@click.option("--out", "output", type=OutputPath(dir_okay=False), default=Path("results.csv"),
              show_default=True, callback=suffix(*RESULT_FORMATS, what="--out"),
              help="Results file: .csv, .jsonl or .json (chosen by the suffix).")
@click.option("--report", "report", type=OutputPath(dir_okay=False), default=None,
              callback=suffix(".html", what="--report"),
              help="Also write a review page: one self-contained HTML file with each image, its answer, "
                   "probabilities and Grad-CAM overlay (with --explain); opens offline in any browser.")
@overwrite_option("--out (and the overlays in --explain, the reports in --dicom-sr, and --report)")
@click.option("--recursive", is_flag=True, help="Include sub-folders.")
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True, help="Parallel image decoders.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip files already in --out or its journal "
              "(same model, same folder and options).")
@click.option("--providers", default=None,
              help="ONNX Runtime providers in order, e.g. CUDAExecutionProvider,CPUExecutionProvider "
                   "(default: TensorRT, CUDA, CPU as available).")
@click.option("--class-names", "--classes", "class_names", cls=AliasedOption, default=None,
              help="Comma-separated class names, only for models without s3f-edge metadata.")
@click.option("--dicom-sr", "dicom_sr", type=OutputPath(file_okay=False), default=None,
              help="Also write a DICOM Structured Report (TID 1500) for every DICOM image answered, in this folder, "
                   "to store in the image's study in a PACS (needs the dicom extra).")
@click.option("--explain", "explain_dir", type=OutputPath(file_okay=False), default=None,
              help="Write Grad-CAM overlays of the spatial branch here (.keras models only).")
@click.option("--explain-classes", default=None,
              help="Only explain images predicted as these classes (comma-separated).")
@click.option("--accept-ood", is_flag=True,
              help="Classify images unlike the model's training images too, instead of refusing them (each row "
                   "still gets its ood_score).")
@click.option("--ood-threshold", type=FiniteFloat(), default=None,
              help="Refuse images whose out-of-distribution score is above this, instead of the model's own threshold "
                   "(fitted to accept 99% of its validation images).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              callback=_ray_address,
              help="Run decoding and prediction on a Ray cluster: --ray alone starts Ray on this machine, --ray "
                   "ADDRESS (host:port, or auto) joins a running cluster. FOLDER and --model must be at the same "
                   "path on every node. Needs the cluster extra.")
@click.option("--ray-actors", type=click.IntRange(1), default=2, show_default=True,
              help="With --ray: model replicas (Ray actors), each loading the model once.")
@click.option("--ray-cpus", type=FiniteFloat(0, min_open=True), default=1.0, show_default=True,
              help="With --ray: CPUs reserved for each actor (its ONNX Runtime threads).")
@click.option("--ray-gpus", type=FiniteFloat(0), default=0.0, show_default=True,
              help="With --ray: GPUs reserved for each actor (1 on GPU nodes).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def infer(folder, model_path, batch_size, output, report, overwrite, recursive, workers, resume, providers,
          class_names, dicom_sr, explain_dir, explain_classes, accept_ood, ood_threshold, ray_address, ray_actors,
          ray_cpus, ray_gpus, quiet):
    """Classify every file in FOLDER: one row per file, a prediction or the reason there is none.

    Rows are sorted by path and hold: path, status, reason, predicted class, every class
    probability, the out-of-distribution score, model name and sha256. Status is ok (a class),
    refused (the image is unlike the model's training images: no class, probabilities kept for
    audit) or error (unreadable). The output is written atomically; --resume never duplicates a
    row. Exit code 0 when every file was answered (refusing is an answer), 3 when some failed.
    --report writes a page to review the rows by eye (also: s3f-edge report RESULTS).
    """
    from s3f_edge.runtime.infer import ClusterOptions, InferOptions
    from s3f_edge.tasks.infer import infer as run

    options = InferOptions(
        folder, output, model=model_path, providers=names(providers), class_names=names(class_names),
        batch_size=batch_size, recursive=recursive, workers=workers, resume=resume, overwrite=overwrite,
        accept_ood=accept_ood, ood_threshold=ood_threshold, explain_dir=explain_dir,
        explain_classes=set(names(explain_classes) or []) or None, report=report, dicom_sr=dicom_sr,
        progress=not quiet,
        cluster=None if ray_address is None else ClusterOptions(ray_address, ray_actors, ray_cpus, ray_gpus))
    for problem in options.usage_problems():
        raise click.UsageError(problem)
    ray_settings = {"--ray-actors": (ray_actors, 2), "--ray-cpus": (ray_cpus, 1.0), "--ray-gpus": (ray_gpus, 0.0)}
    stray = [name for name, (value, default) in ray_settings.items() if value != default]
    if ray_address is None and stray:
        raise click.UsageError(f"{stray[0]} applies to --ray only: add --ray, or drop it")
    set_interrupt_hint(lambda: _interrupt_hint(output, overwrite))
    outcome = run(options, log=None if quiet else lambda line: click.echo(line, err=True), answered=_print_summary)
    if outcome.page is not None:
        click.echo(f"review page: {outcome.page}")
    if outcome.summary.errors_in_output:  # after --resume, earlier runs' error rows count too: the output is judged
        sys.exit(EXIT_SOME_FILES_FAILED)
