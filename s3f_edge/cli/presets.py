"""`s3f-edge presets`: the original four configurations and their parameter counts."""
from __future__ import annotations

import click

from s3f_edge.cli.common import (
    table,
)
from s3f_edge.cli.support import (
    Command,
)


@click.command("presets", cls=Command)
@click.option("--count-params/--no-count-params", default=True, show_default=True,
              help="Build every model to count its parameters (the 138M-parameter BUSI model takes a few seconds).")
def presets(count_params: bool) -> None:
    """List the presets: the four configurations of the original S3F-Net paper."""
    from s3f_edge.tasks.presets import preset_rows

    click.echo(table(["preset", "input", "head", "spectral", "fusion", "S3F-Net", "baseline", "spectral-only"],
                     preset_rows(count_params)))
