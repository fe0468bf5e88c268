"""`s3f-edge calibrate MODEL DATA/`: temperature and refusal threshold for a trained model."""
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
    FiniteFloat,
    OutputPath,
    overwrite_option,
)


@click.command("calibrate", cls=Command)
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=suffix(".keras", what="MODEL (the trained model)"))
@click.argument("data", type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_path", type=OutputPath(dir_okay=False), default=None,
              callback=suffix(".keras", what="--out"),
              help="Where to save the calibrated model (default: MODEL with a .calibrated.keras suffix; "
                   "runs/default-model/ for the bundled model).")
@overwrite_option("--out")
@click.option("--val-fraction", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=None,
              help="The validation split carved from DATA's training images (default: the one the model records; "
                   "a model that records none needs its own, so that its validation images are unseen).")
@click.option("--seed", type=int, default=None,
              help="The split's seed (default: the model's; a model that records none needs its own).")
@click.option("--other-data", is_flag=True,
              help="DATA is not the dataset the model was trained on, on purpose: none of its images were seen by "
                   "the model (recorded in the calibration). Any split will do (default 0.15, seed 0).")
@click.option("--keep", type=FiniteFloat(0.5, 1.0), default=0.99, show_default=True,
              help="Share of the validation images the refusal threshold accepts.")
@click.option("--coverage", "coverages", type=FiniteFloat(0.5, 1.0, max_open=True), multiple=True,
              help="Coverage of the prediction sets infer gives: the set of classes holds the true class of at least "
                   "this share of images like the validation images (default 0.95). Repeat to store several levels; "
                   "the first is the one infer uses.")
@click.option("--fit-images", type=click.IntRange(10), default=10000, show_default=True,
              help="Training images (seeded sample) for the out-of-distribution score's class statistics.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def calibrate(model_path, data, out_path, overwrite, val_fraction, seed, other_data, keep, coverages, fit_images,
              quiet):
    """Fit a trained MODEL's temperature and out-of-distribution score on its own dataset DATA (no retraining).

    The temperature makes the probabilities honest (fitted on the validation split by log-likelihood;
    the classes predicted do not change). The score measures how unlike the training images an image
    is, at every convolutional block; its threshold accepts --keep of the validation images, and
    `infer` refuses images above it. Prediction sets: every class at least as plausible as the
    true classes of --coverage of the validation images, so that a set holds the true class at that
    rate on images like them (split conformal). All of it becomes part of the saved model; `export
    --data` fits it again on each file it writes.
    `train` does this at its end; this command is for models trained before, or elsewhere. DATA must be
    the dataset the model was trained on (checked when the model records its files), unless --other-data.
    """
    needs("calibration", ("tensorflow", "keras", "sklearn", "scipy"))
    from s3f_edge.train.calibrate import DATA_CHECK_NOTES, DEFAULT_COVERAGE, calibrate_file

    if out_path is None:
        from s3f_edge.runtime.predictor import beside_model

        out_path = beside_model(model_path) / (model_path.stem + ".calibrated.keras")
    report = calibrate_file(model_path, data, out_path, val_fraction=val_fraction, seed=seed, keep=keep,
                            coverages=coverages or (DEFAULT_COVERAGE,), fit_images=fit_images, other_data=other_data,
                            overwrite=overwrite, progress=not quiet)
    from s3f_edge.runtime.calibration import calibration_lines

    fitted = report["fitted_on"]
    for line in calibration_lines(report):
        click.echo(line)
    click.echo(f"fitted on {fitted['training_images']} training and {fitted['validation_images']} validation images "
               f"(validation split {fitted['val_fraction']}, seed {fitted['seed']})\nsaved: {out_path}")
    if fitted["data_check"] in DATA_CHECK_NOTES:
        click.echo(f"note: {DATA_CHECK_NOTES[fitted['data_check']]}")
