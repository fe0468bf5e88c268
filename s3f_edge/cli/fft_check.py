"""`s3f-edge fft-check IMAGES/`: the SpectralFilter's forms against float64 numpy."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from s3f_edge.cli.common import (
    parse_size,
    table,
)
from s3f_edge.cli.support import (
    EXIT_ERROR,
    Command,
    ExistingPath,
    FiniteFloat,
)


@click.command("fft-check", cls=Command)
@click.argument("images", type=ExistingPath(path_type=Path))
@click.option("--size", "sizes", multiple=True, default=["256x256", "384x512", "225x300"], show_default=True,
              help="Input sizes (HxW) to check; repeat the option for several.")
@click.option("--filters", type=click.IntRange(1), default=32, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=4, show_default=True, help="Images to use.")
@click.option("--tolerance", type=FiniteFloat(0), default=1e-5, show_default=True,
              help="Largest relative L2 error accepted.")
def fft_check(images, sizes, filters, limit, tolerance):
    """Check the SpectralFilter's FFT and DFT-as-matmul forms against a float64 numpy reference.

    IMAGES is an image file or a folder (searched recursively). Exits non-zero above TOLERANCE.
    """
    from s3f_edge.tasks.fft_check import check_forms

    checked = check_forms(images, [parse_size(size) for size in sizes], filters, limit)
    click.echo(table(["size", "images", "fft rel. error", "matmul rel. error"],
                     [[f"{c['height']}x{c['width']}", c["images"], f"{c['fft']:.2e}", f"{c['matmul']:.2e}"]
                      for c in checked]))
    worst = max(max(c["fft"], c["matmul"]) for c in checked)
    if worst > tolerance:
        click.secho(f"FAILED: worst relative error {worst:.2e} > {tolerance:.0e}", fg="red")
        sys.exit(EXIT_ERROR)
    click.echo(f"ok: both forms within {tolerance:.0e} of float64 numpy")
