"""`s3f-edge verify M.keras M.onnx`: deployed files against the Keras model they came from."""
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
    EXIT_ERROR,
    Command,
    ExistingPath,
)
from s3f_edge.runtime.formats import MODEL_SUFFIXES


@click.command("verify", cls=Command)
@click.argument("keras_model", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(".keras", what="KERAS_MODEL (the model the files were exported from)"))
@click.argument("deployed", nargs=-1, required=True, type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(*(s for s in MODEL_SUFFIXES if s != ".keras"), what="DEPLOYED"))
@click.option("--images", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Real images to compare on (searched recursively; default: the 8 shipped with s3f-edge).")
@click.option("--limit", type=click.IntRange(1), default=256, show_default=True, help="Images to use at most.")
@click.option("--providers", default=None, help="ONNX Runtime providers in order (default: the best available).")
def verify(keras_model, deployed, images, limit, providers):
    """Compare deployed models (.onnx, .engine) with the KERAS_MODEL they came from.

    Reports the max |probability difference| and top-1 agreement per backend; exits 1 when one
    is out of tolerance (fp32: 1e-4; fp16/int8: top-1 agreement below 99%).
    """
    from s3f_edge.runtime.verify import verify_backends

    report = verify_backends(keras_model, list(deployed), images, limit, names(providers))
    click.echo(table(["model", "backend", "provider", "precision", "images", "max |p diff|", "top-1",
                       "ood_score rel. diff", "result"],
                      [[Path(r["model"]).name, r["backend"], r["provider"], r["precision"], r["count"],
                        f"{r['max_abs_diff']:.2e}", f"{r['top1_agreement']:.1%}",
                        "-" if r["score_max_rel_diff"] is None else f"{r['score_max_rel_diff']:.2e}",
                        "; ".join(r["failures"]) or "ok"] for r in report]))
    if any(r["failures"] for r in report):
        sys.exit(EXIT_ERROR)
