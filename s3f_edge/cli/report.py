"""`s3f-edge report RESULTS...`: a review page of infer's results files."""
from __future__ import annotations

from pathlib import Path

import click

from s3f_edge.cli.common import (
    suffix,
)
from s3f_edge.cli.support import (
    Command,
    ExistingPath,
    OutputPath,
    overwrite_option,
)
from s3f_edge.runtime.formats import RESULT_FORMATS


@click.command("report", cls=Command)
@click.argument("results", nargs=-1, required=True, type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(*RESULT_FORMATS, what="RESULTS"))
@click.option("--out", "output", type=OutputPath(dir_okay=False), default=Path("review.html"),
              show_default=True, callback=suffix(".html", what="--out"), help="The page to write.")
@click.option("--explain", "explain_dir", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="The folder infer --explain wrote Grad-CAM overlays into: shown beside each image.")
@click.option("--dicom-sr", "dicom_sr", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="The folder infer --dicom-sr wrote DICOM reports into: the summary counts them.")
@click.option("--thumbnail-size", type=click.IntRange(16, 512), default=96, show_default=True,
              help="Longer side of each embedded image, in pixels (about 3 KB per image at 96).")
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True, help="Parallel image decoders.")
@overwrite_option("--out")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def report(results, output, explain_dir, dicom_sr, thumbnail_size, workers, overwrite, quiet):
    """Write a review page of infer RESULTS files (.csv, .jsonl or .json; several go on one page).

    One self-contained HTML file (no network; opens from disk): a summary (model, sha256, counts
    per class, refused and error rows), then one row per file with its image, status and reason,
    answer, every probability as a bar and the out-of-distribution score; filter by status, class
    and confidence, sort, search, and move with the keyboard (j/k rows, n/p pages). Images are
    read from the paths in RESULTS, so run it where those paths resolve; an image changed after its
    answer is marked, and a missing picture says why. Several RESULTS (e.g. two models on one
    folder): each row names its results file and model; a file given twice is read once (said on
    stderr and on the page).
    """
    from s3f_edge.report.results_page import write_results_report

    page = write_results_report(list(results), output, explain_dir=explain_dir, thumbnail_size=thumbnail_size,
                                workers=workers, progress=not quiet, overwrite=overwrite, option="--out",
                                dicom_sr=dicom_sr,
                                log=lambda line: click.echo(f"note: {line}", err=True))
    click.echo(f"review page: {page}")
