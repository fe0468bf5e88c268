"""`s3f-edge bench MODELS...`: latency, throughput, cold start and FLOP/s."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from s3f_edge.cli.common import (
    image_folder,
    int_list,
    suffix,
    table,
)
from s3f_edge.cli.support import (
    EXIT_ERROR,
    AliasedOption,
    Command,
    ExistingPath,
    FiniteFloat,
    OutputPath,
    overwrite_option,
)
from s3f_edge.runtime.formats import BACKENDS, MODEL_SUFFIXES


@click.command("bench", cls=Command)
@click.argument("models", nargs=-1, required=True, type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(*MODEL_SUFFIXES, what="MODELS"))
@click.option("--backends", default="keras,onnx-cpu,onnx-cuda,trt", show_default=True,
              help=f"Backends to run where the model file allows ({', '.join(BACKENDS)}): .keras -> keras; "
                   ".onnx -> onnx-cpu, onnx-cuda, onnx-trt; .engine/.plan -> trt. Unavailable ones are skipped with "
                   "the reason; one that fails becomes a row saying why.")
@click.option("--batch-sizes", "--batch", "batches", cls=AliasedOption, default="1,8,32", show_default=True,
              help="Batch sizes to time, comma-separated.")
@click.option("--duration", type=FiniteFloat(0.1), default=5.0, show_default=True,
              help="Seconds of timed runs per backend and batch (after warm-up).")
@click.option("--warmup", type=FiniteFloat(0), default=1.0, show_default=True,
              help="Seconds of untimed runs first.")
@click.option("--images", default=None, callback=image_folder,
              help="Folder of real input images, or 'random' for fresh random tensors (default: the packaged images).")
@click.option("--end-to-end", "e2e_dir", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Also time files decoded to written rows (`infer`) over this folder.")
@click.option("--gemm/--no-gemm", default=True, show_default=True,
              help="Measure this machine's float32 GEMM rate and report achieved FLOP/s as a fraction of it.")
@click.option("--json", "json_out", type=OutputPath(dir_okay=False), default=None,
              callback=suffix(".json", what="--json"), help="Write results as JSON.")
@click.option("--plot", "plot_out", type=OutputPath(dir_okay=False), default=None,
              callback=suffix(".png", what="--plot"), help="Write a PNG of latency against batch per backend.")
@overwrite_option("--json and --plot")
def bench(models, backends, batches, duration, warmup, images, e2e_dir, gemm, json_out, plot_out, overwrite):
    """Latency (p50/p90/p99/max, never clipped), throughput and cold start for each MODEL, backend and batch.

    A backend that fails (or gives NaN/inf outputs) becomes a row saying why, and the exit code is 1;
    so is a run in which no backend could run at all.
    FLOPs per image come from the first .keras model given (spectral layers counted at their FFT
    cost); achieved FLOP/s is compared with a large float32 GEMM measured in the same run.
    """
    from s3f_edge.tasks.bench import BenchOptions
    from s3f_edge.tasks.bench import bench as run

    wanted = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = set(wanted) - set(BACKENDS)
    if unknown:
        raise click.BadParameter(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}",
                                 param_hint="'--backends'")
    options = BenchOptions(list(models), wanted, int_list(batches, "--batch-sizes"), duration, warmup, images, e2e_dir,
                           gemm, json_out, plot_out, overwrite)
    outcome = run(options, say=click.echo, log=lambda line: click.echo(line, err=True))
    dash = lambda value: "-" if value is None else value  # noqa: E731
    click.echo(table(
        ["model", "backend", "mode", "batch", "p50 ms", "p90 ms", "p99 ms", "max ms", "img/s", "cold s", "GFLOP/s",
         "of GEMM", "status"],
        [[r.model, r.backend, r.mode, dash(r.batch), dash(r.p50_ms), dash(r.p90_ms), dash(r.p99_ms), dash(r.max_ms),
          dash(r.images_per_second), dash(r.cold_start_s), dash(r.gflops_per_second),
          "-" if r.fraction_of_gemm is None else f"{r.fraction_of_gemm:.0%}", r.status] for r in outcome.results]))
    for note in outcome.skipped:
        click.echo(f"skipped: {note}")
    if outcome.failed:
        click.secho(f"{outcome.failed} measurement(s) failed; see the status column", err=True, fg="red")
        sys.exit(EXIT_ERROR)
