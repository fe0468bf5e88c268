"""`s3f-edge matrix M.keras DATA/`: accuracy x speed of every deployable form of a model."""
from __future__ import annotations

from pathlib import Path

import click

from s3f_edge.cli.common import (
    int_list,
    needs,
    suffix,
)
from s3f_edge.cli.support import (
    AliasedOption,
    Command,
    ExistingPath,
    FiniteFloat,
    OutputPath,
    overwrite_option,
)
from s3f_edge.export.choices import FFT_LOWERINGS


@click.command("matrix", cls=Command)
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(".keras", what="MODEL (the trained model)"))
@click.argument("data", required=False, type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=OutputPath(file_okay=False), default=Path("matrix"),
              show_default=True, help="Where the artefacts, matrix.json and matrix.md go.")
@overwrite_option("--out")
@click.option("--calib", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Training images for INT8 calibration (without it, no INT8 row).")
@click.option("--batch-sizes", "--batch", "batches", cls=AliasedOption, default="1,32", show_default=True,
              help="Batch sizes to time, comma-separated.")
@click.option("--duration", type=FiniteFloat(0.1), default=3.0, show_default=True,
              help="Seconds of timed runs per artefact and batch.")
@click.option("--fft", type=click.Choice(FFT_LOWERINGS), default="matmul", show_default=True,
              help="How the ONNX artefacts lower the FFT.")
@click.option("--trt/--no-trt", default=None,
              help="Build and time TensorRT engines (default: when TensorRT and a GPU are here).")
def matrix(model_path, data, out_dir, overwrite, calib, batches, duration, fft, trt):
    """Accuracy x speed of every deployable form of MODEL (.keras): one row per artefact.

    Exports ONNX FP32, FP16 and INT8 (and TensorRT engines where available), scores each on the
    labelled folder DATA (accuracy, macro-F1, top-1 agreement with Keras on every image) and times
    each at the --batch-sizes in the same run, beside Keras. Without DATA, speed only. Writes
    OUT/matrix.json and OUT/matrix.md; prints the table.
    """
    from s3f_edge.dependencies import EXPORT_STACK

    batch_sizes = tuple(int_list(batches, "--batch-sizes"))
    needs("the accuracy x speed matrix", EXPORT_STACK)
    from s3f_edge.bench.matrix import accuracy_speed_matrix, markdown

    result = accuracy_speed_matrix(model_path, out_dir, data, calib, batch_sizes, duration, fft=fft, trt=trt,
                                   overwrite=overwrite, log=lambda message: click.echo(message, err=True))
    click.echo(markdown(result))
    click.echo(f"written: {out_dir / 'matrix.json'}, {out_dir / 'matrix.md'}")
