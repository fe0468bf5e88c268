"""`s3f-edge train DATA/`: one training run, then its report."""
from __future__ import annotations

from pathlib import Path

import click

from s3f_edge.cli.common import (
    needs,
    progress_verbosity,
    size_option,
    table,
)
from s3f_edge.cli.support import (
    Command,
    ExistingPath,
    FiniteFloat,
    OutputPath,
    overwrite_option,
    set_interrupt_hint,
)
from s3f_edge.model.presets import FUSIONS, KINDS, PRESETS, VARIANTS


@click.command("train", cls=Command)
@click.argument("data", type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=OutputPath(), default=None,
              help="Run directory to create (default: runs/<preset>-<model>).")
@overwrite_option("the run directory (--out)")
@click.option("--preset", default="brisc2025", show_default=True,
              type=click.Choice(list(PRESETS)),
              help="Original configuration: input size, channels, SpectraNet variant, fusion, epochs, patiences.")
@click.option("--model", "kind", default="s3f", show_default=True, type=click.Choice(KINDS),
              help="S3F-Net, the spatial-only baseline, or the spectral-only SpectraNet.")
@click.option("--image-size", default=None, callback=size_option,
              help="Train at HxW (or one number for square) instead of the preset's size; "
                   "smaller trains much faster on a CPU.")
@click.option("--variant", type=click.Choice(VARIANTS), default=None, help="SpectraNet variant (default: preset's).")
@click.option("--fusion", type=click.Choice(FUSIONS), default=None, help="Fusion (default: preset's).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Maximum epochs (default: preset's, 100-200).")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--lr", "learning_rate", type=FiniteFloat(0, min_open=True), default=3e-4, show_default=True,
              help="Adam learning rate.")
@click.option("--patience", type=click.IntRange(1), default=None,
              help="Early stop after this many epochs without a better selection F1 (default: preset's).")
@click.option("--lr-patience", type=click.IntRange(1), default=None,
              help="ReduceLROnPlateau (x0.2 down to 1e-6) patience on validation loss (default: preset's).")
@click.option("--val-fraction", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.15,
              show_default=True, help="Stratified share of train held out for model selection.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split, the weights and the shuffling.")
@click.option("--paper-protocol", is_flag=True,
              help="Select checkpoints on the TEST set as the original work did (optimistic; every report says so).")
@click.option("--no-class-weights", is_flag=True, help="Do not balance the loss by class frequency.")
@click.option("--precise-bn/--no-precise-bn", default=True, show_default=True,
              help="Before every validation and checkpoint, set each BatchNorm layer's statistics to the population "
                   "mean/variance of its inputs over a sample of training images, dropout off. Without it, inference "
                   "uses the moving averages of training (the original recipe), which can collapse small datasets to "
                   "one class.")
@click.option("--precise-bn-images", type=click.IntRange(1), default=1024, show_default=True,
              help="Training images (seeded sample) for the precise BatchNorm statistics.")
@click.option("--calibrate/--no-calibrate", "calibrate_model", default=True, show_default=True,
              help="At the end, fit a temperature for honest probabilities and an out-of-distribution score with the "
                   "threshold above which `infer` refuses an image (on the run's own training and validation images; "
                   "see `s3f-edge calibrate`).")
@click.option("--class-codes", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              help="How DICOM reports (infer --dicom-sr) code each class: a .json {class: [code value, coding scheme, "
                   "meaning]} or .csv (class,code_value,scheme,meaning) file, e.g. SNOMED CT codes; stored in the "
                   "model (default: s3f-edge's private scheme 99S3FEDGE, the class name as code).")
@click.option("--augment", is_flag=True, help="Random horizontal flips and small rotations (off in the original).")
@click.option("--mixed-precision", is_flag=True,
              help="float16 compute (GPUs with tensor cores); the SpectralFilter and the output stay float32.")
@click.option("--strategy", type=click.Choice(["auto", "mirrored", "multiworker"]), default="auto", show_default=True,
              help="auto: one device (the GPU when TensorFlow sees one); mirrored: data-parallel over all local GPUs; "
                   "multiworker: synchronous data-parallel over several hosts, configured by TF_CONFIG on each "
                   "(start the same command on every worker; the chief writes --out, a path all workers can read "
                   "for --resume). --batch-size is the global batch.")
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True, help="Parallel image decoders.")
@click.option("--cache", type=click.Choice(["memory", "disk"]), default="memory", show_default=True,
              help="Where decoded images live: memory, or a disk cache that later runs reuse and that is read "
                   "batch by batch (datasets larger than RAM).")
@click.option("--cache-dir", type=OutputPath(file_okay=False), default=None,
              help="Disk cache location (default: $S3F_EDGE_CACHE or ~/.cache/s3f-edge/decoded).")
@click.option("--resume", "resume_dir", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Continue an interrupted run in this directory, where it is, with its saved options (--epochs may "
                   "extend it); DATA must hold the same files.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(data, out_dir, overwrite, preset, kind, image_size, variant, fusion, epochs, batch_size, learning_rate,
          patience, lr_patience, val_fraction, seed, paper_protocol, no_class_weights, precise_bn, precise_bn_images,
          calibrate_model, class_codes, augment, mixed_precision, strategy, workers, cache, cache_dir, resume_dir,
          quiet):
    """Train on DATA: DATA/train/<class>/* with optional DATA/test/<class>/*, or DATA/<class>/*.

    Class names come from the folder names (sorted). A stratified validation split carved from
    train chooses the checkpoint (weighted F1), stops early and drives the learning-rate schedule;
    the test set is scored once, at the end, with the chosen model. The run directory receives
    model.keras (best), last.keras, config.json, history.csv, metrics.json, skipped.csv and plots.
    """
    import json

    from s3f_edge.dependencies import TRAINING_STACK

    if resume_dir is not None and (out_dir is not None or overwrite):
        raise click.UsageError("--resume continues the run in its own directory: leave out --out and --overwrite")
    needs("training", TRAINING_STACK)
    from s3f_edge.train.trainer import TrainOptions, is_resumable, saved_options
    from s3f_edge.train.trainer import train as run_training

    verbose = progress_verbosity(quiet)
    if resume_dir is not None:
        # The run continues where it is now and reads DATA as given now (config.json's paths may be relative to
        # another working directory, or name the directory this one was copied from); --epochs may extend it.
        options = TrainOptions.from_saved(saved_options(resume_dir), verbose=verbose, out_dir=str(resume_dir),
                                          data_dir=str(data), **({"epochs": epochs} if epochs is not None else {}))
    else:
        out_dir = out_dir or Path("runs") / f"{preset}-{kind}"
        options = TrainOptions(
            data_dir=str(data), out_dir=str(out_dir), preset=preset, model=kind, image_size=image_size,
            variant=variant, fusion=fusion, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            patience=patience, lr_patience=lr_patience, val_fraction=val_fraction, seed=seed,
            paper_protocol=paper_protocol, class_weights=not no_class_weights, precise_bn=precise_bn,
            precise_bn_images=precise_bn_images, calibrate=calibrate_model, augment=augment,
            class_codes=str(class_codes) if class_codes else None,
            mixed_precision=mixed_precision, strategy=strategy, workers=workers, cache=cache,
            cache_dir=str(cache_dir) if cache_dir else None, verbose=verbose,
        )
    run_path = Path(options.out_dir)
    set_interrupt_hint(lambda: f"continue with: s3f-edge train {data} --resume {run_path}" if is_resumable(run_path)
                       else f"no epoch had finished, so there is nothing to resume; start again with --out {run_path} "
                            "--overwrite")
    run_dir = run_training(options, resume=resume_dir is not None, overwrite=overwrite)
    if run_dir is None:
        click.echo(f"worker finished; the chief worker writes the run directory {options.out_dir}")
        return
    report = json.loads((run_dir / "metrics.json").read_text())
    _print_report(report, run_dir)


def _print_report(report: dict, run_dir: Path) -> None:
    rows = []
    for split in ("validation", "test (paper protocol)", "test"):
        if split in report:
            m = report[split]
            auc = "-" if m["roc_auc_macro"] is None else f"{m['roc_auc_macro']:.4f}"
            rows.append([split, m["count"], f"{m['accuracy']:.4f}", f"{m['f1_weighted']:.4f}",
                         f"{m['cohen_kappa']:.4f}", auc])
    click.echo()
    click.echo(table(["split", "images", "accuracy", "F1 weighted", "kappa", "AUC macro"], rows))
    if report["protocol"].startswith("PAPER"):
        click.secho(report["protocol"], fg="yellow")
    click.echo(f"\nrun directory: {run_dir}  (best model: {run_dir / 'model.keras'})")
