"""`s3f-edge precise-bn MODEL DATA/`: population BatchNorm statistics for a trained model."""
from __future__ import annotations

from pathlib import Path

import click

from s3f_edge.cli.common import (
    needs,
    suffix,
)
from s3f_edge.cli.support import (
    Command,
    ExistingPath,
    OutputPath,
    overwrite_option,
)


@click.command("precise-bn", cls=Command)
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(".keras", what="MODEL"))
@click.argument("images", type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_path", type=OutputPath(dir_okay=False), default=None,
              callback=suffix(".keras", what="--out"),
              help="Where to save the recalibrated model (default: MODEL with a .precise-bn.keras suffix).")
@overwrite_option("--out")
@click.option("--images-used", "sample_size", type=click.IntRange(1), default=1024, show_default=True,
              help="Images to sample (seeded) for the statistics.")
@click.option("--seed", type=int, default=0, show_default=True)
def precise_bn(model_path, images, out_path, overwrite, sample_size, seed):
    """Recompute a trained MODEL's BatchNorm statistics on its TRAINING IMAGES (no retraining).

    Each BatchNorm layer's moving mean and variance become the population statistics of its inputs
    over a sample of the images, with dropout off: the remedy for models whose inference collapses to
    one class because their moving averages do not match inference (e.g. models trained with the
    original notebooks, or with --no-precise-bn). Weights are unchanged. IMAGES is a folder of
    training images; for a dataset root with train/, only train/ is read, and class folders must
    match the model's classes. Score the result with s3f-edge evaluate.
    """
    needs("recomputing BatchNorm statistics", ("tensorflow", "keras"))
    from s3f_edge.train.precise_bn import precise_bn_file

    out_path = out_path or model_path.with_name(model_path.stem + ".precise-bn.keras")
    report = precise_bn_file(model_path, images, out_path, sample_size=sample_size, seed=seed, overwrite=overwrite)
    click.echo(f"{report['layers_updated']} BatchNorm layers recomputed from {report['images_used']} images of "
               f"{report['images_folder']} ({len(report['unreadable'])} unreadable); largest change of a channel's "
               f"variance: {report['largest_relative_variance_change']:.1%} of the larger of its old and new values"
               f"\nsaved: {out_path}")
    if report["calibration_removed"]:
        click.echo(f"its calibration no longer fits the new statistics and was removed: run s3f-edge calibrate "
                   f"{out_path} DATA/ to fit it again")
