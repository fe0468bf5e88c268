"""The s3f-edge command line: parses options and calls the library functions the tests call too.

Only click and the plain option tables are imported here; each command imports what it needs, so
`infer` and `bench` on ONNX or TensorRT files never load TensorFlow. How errors, exit codes and
interrupts are reported lives in ``cli_support``; what happens to existing outputs in ``outputs``.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from s3f_edge.cli_support import (
    EXIT_ERROR,
    EXIT_SOME_FILES_FAILED,
    AliasedOption,
    ExistingPath,
    FiniteFloat,
    FolderAfterOptionalValue,
    Group,
    OutputPath,
    overwrite_option,
    set_interrupt_hint,
)
from s3f_edge.export.choices import CALIBRATION_METHODS, FFT_LOWERINGS, PRECISIONS
from s3f_edge.model.presets import FUSIONS, KINDS, PRESETS, VARIANTS
from s3f_edge.runtime.formats import BACKENDS, MODEL_SUFFIXES, RESULT_FORMATS


def _needs(purpose: str, stack: tuple[str, ...]) -> None:
    from s3f_edge.dependencies import require

    require(purpose, "train", *stack)


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = lambda row: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


_SIZE = re.compile(r"^\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?$", re.IGNORECASE)


def _size_option(ctx, param, value):
    return _size(value)


def _size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = _SIZE.match(value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a size; use 128 or 224x256 (height x width)")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if min(height, width) < 16:
        raise click.BadParameter(f"{value!r}: give sizes of at least 16 pixels, e.g. 128 or 384x512")
    return height, width


def _suffix(*allowed: str, what: str):
    """A callback refusing a path whose suffix the option does not take (a usage error: the name alone shows it)."""

    def check(ctx, param, value):
        values = value if isinstance(value, tuple) else (value,)
        for path in values:
            if path is not None and Path(path).suffix.lower() not in allowed:
                choices = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
                raise click.BadParameter(f"{Path(path).name}: {what} must end in {choices}")
        return value

    return check


def _progress_verbosity(quiet: bool) -> int:
    """Keras's verbose: 0 quiet, 1 a live progress bar on a terminal, 2 one line per epoch in a log file (the bar's
    colour codes and carriage returns would fill it)."""
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="s3f-edge")
@click.option("--verbose", is_flag=True, help="Show TensorFlow/CUDA native log lines (also: S3F_EDGE_VERBOSE=1).")
def main(verbose: bool) -> None:
    """s3f-edge: train, check and evaluate S3F-Net, the spatial-spectral medical image classifier.

    \b
    Typical use:
      s3f-edge presets                      the original four configurations and their sizes
      s3f-edge train DATA/ --out runs/a     train with a held-out validation split
      s3f-edge evaluate runs/a/model.keras DATA/test
      s3f-edge calibrate M.keras DATA/      honest probabilities and refusal of images unlike the training ones
      s3f-edge precise-bn M.keras DATA/     population BatchNorm statistics for a model trained elsewhere
      s3f-edge export runs/a/model.keras    ONNX (+ TensorRT, Triton), verified against Keras
      s3f-edge infer FOLDER/ --model M      one result row per file (CSV, JSONL or JSON)
      s3f-edge verify M.keras M.onnx        deployed backends against Keras on real images
      s3f-edge bench M.keras M.onnx         latency percentiles, throughput, FLOP/s vs this machine's GEMM
      s3f-edge matrix M.keras DATA/test     accuracy x speed of every export (ONNX FP32/FP16/INT8, TensorRT)
      s3f-edge fft-check IMAGES/            the FFT and DFT-as-matmul forms against numpy

    \b
    Outputs: a command never replaces earlier results unless given --overwrite.
    Exit codes: 0 success; 1 an error to fix (the one-line message says how); 2 a usage
    error; 3 infer: some files could not be classified; 130 interrupted.
    """


@main.command()
@click.option("--count-params/--no-count-params", default=True, show_default=True,
              help="Build every model to count its parameters (the 138M-parameter BUSI model takes a few seconds).")
def presets(count_params: bool) -> None:
    """List the presets: the four configurations of the original S3F-Net paper."""
    rows = []
    if count_params:
        from s3f_edge.dependencies import TRAINING_STACK

        _needs("counting parameters (or use --no-count-params)", TRAINING_STACK)
        from s3f_edge.model import build_model

    for preset in PRESETS.values():
        counts = ["-"] * 3
        if count_params:
            counts = [f"{build_model(preset.name, kind=k).count_params():,}" for k in ("s3f", "baseline", "spectral")]
        h, w, c = preset.input_shape
        head = "1 sigmoid" if preset.sigmoid_head else f"{preset.num_classes} softmax"
        rows.append([preset.name, f"{h}x{w}x{c}", head, preset.variant.upper(), preset.fusion, *counts])
    click.echo(_table(["preset", "input", "head", "spectral", "fusion", "S3F-Net", "baseline", "spectral-only"], rows))


@main.command()
@click.argument("data", type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=OutputPath(), default=None,
              help="Run directory to create (default: runs/<preset>-<model>).")
@overwrite_option("the run directory (--out)")
@click.option("--preset", default="brisc2025", show_default=True,
              type=click.Choice(list(PRESETS)),
              help="Original configuration: input size, channels, SpectraNet variant, fusion, epochs, patiences.")
@click.option("--model", "kind", default="s3f", show_default=True, type=click.Choice(KINDS),
              help="S3F-Net, the spatial-only baseline, or the spectral-only SpectraNet.")
@click.option("--image-size", default=None, callback=_size_option,
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
          calibrate_model, augment, mixed_precision, strategy, workers, cache, cache_dir, resume_dir, quiet):
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
    _needs("training", TRAINING_STACK)
    from s3f_edge.train.trainer import TrainOptions, is_resumable, saved_options
    from s3f_edge.train.trainer import train as run_training

    verbose = _progress_verbosity(quiet)
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
    click.echo(_table(["split", "images", "accuracy", "F1 weighted", "kappa", "AUC macro"], rows))
    if report["protocol"].startswith("PAPER"):
        click.secho(report["protocol"], fg="yellow")
    click.echo(f"\nrun directory: {run_dir}  (best model: {run_dir / 'model.keras'})")


@main.command()
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(*MODEL_SUFFIXES, what="MODEL"))
@click.argument("data", type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=OutputPath(), default=None,
              help="Where to write metrics.json, skipped.csv and the plots (default: beside the model, "
                   "evaluate-<folder>; runs/default-model/evaluate-<folder> for the bundled model).")
@overwrite_option("--out")
@click.option("--exclude", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              help="File of names or relative paths to leave out (e.g. duplicates of training images), one per line.")
@click.option("--ood", "ood_folders", multiple=True, type=ExistingPath(file_okay=False, path_type=Path),
              help="A folder of images of another kind (repeat for several): measure how well the model's "
                   "out-of-distribution score refuses them (AUROC, FPR at 95%, share refused). Calibrated models only.")
@click.option("--report", "report_page", type=OutputPath(dir_okay=False), default=None,
              callback=_suffix(".html", what="--report"),
              help="Also write a review page: one self-contained HTML file with the metrics, a confusion matrix "
                   "that opens onto its images, the curves and the most confident mistakes.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(model_path, data, out_dir, overwrite, exclude, ood_folders, report_page, batch_size, quiet):
    """Score MODEL (.keras from s3f-edge train, or an .onnx/.engine from s3f-edge export) on the labelled folder DATA.

    DATA is DATA/<class>/* (or a dataset root with test/). The classes must match the model's.
    Writes metrics.json (with the expected calibration error, ECE), skipped.csv, the confusion
    matrix, ROC curves and a reliability diagram; for a calibrated model also the share of DATA it
    refuses and its accuracy on the images it accepts.
    """
    _needs("scoring (metrics and plots)", ("sklearn", "matplotlib"))
    from s3f_edge.train.evaluate import evaluate_folder

    if out_dir is None:
        from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

        # Beside the model, except for the bundled one: never write into the installed package.
        bundled = model_path.resolve().parent == DEFAULT_MODEL_DIR.resolve()
        out_dir = (Path("runs") / "default-model" if bundled else model_path.parent) / f"evaluate-{data.name}"
    report = evaluate_folder(model_path, data, out_dir, exclude=exclude, batch_size=batch_size, overwrite=overwrite,
                             progress=not quiet, ood_folders=list(ood_folders), report_page=report_page)
    m = report["metrics"]
    auc = "-" if m["roc_auc_macro"] is None else f"{m['roc_auc_macro']:.4f}"
    click.echo(_table(["images", "excluded", "skipped", "accuracy", "F1 macro", "F1 weighted", "kappa", "MCC",
                       "AUC macro", "ECE"],
                      [[m["count"], report["excluded_files"], report["skipped_files"], f"{m['accuracy']:.4f}",
                        f"{m['f1_macro']:.4f}", f"{m['f1_weighted']:.4f}", f"{m['cohen_kappa']:.4f}",
                        f"{m['mcc']:.4f}", auc, f"{m['ece']:.4f}"]]))
    ood = report.get("ood")
    if ood:
        accepted = "-" if ood["accuracy_accepted"] is None else f"{ood['accuracy_accepted']:.4f}"
        rows = [[data, m["count"], f"{ood['refused']:.1%}", "-", "-", f"accuracy {m['accuracy']:.4f}, on accepted "
                 f"{accepted}"]]
        rows += [[folder, f["images"], f"{f['refused']:.1%}", f"{f['auroc']:.4f}", f"{f['fpr_at_95']:.1%}",
                  f"{f['unreadable']} unreadable" if f["unreadable"] else ""] for folder, f in ood["folders"].items()]
        click.echo(f"\nout-of-distribution refusal (threshold {ood['threshold']:.3f}):")
        click.echo(_table(["folder", "images", "refused", "AUROC", "FPR at 95%", "note"], rows))
    elif m["count"]:
        click.echo("\n(this model has no out-of-distribution score: it cannot refuse; see s3f-edge calibrate)")
    click.echo(f"\nreport: {out_dir / 'metrics.json'}" + (f"; review page: {report_page}" if report_page else ""))


@main.command("precise-bn")
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(".keras", what="MODEL"))
@click.argument("images", type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_path", type=OutputPath(dir_okay=False), default=None,
              callback=_suffix(".keras", what="--out"),
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
    _needs("recomputing BatchNorm statistics", ("tensorflow", "keras"))
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


@main.command()
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(".keras", what="MODEL (the trained model)"))
@click.argument("data", type=ExistingPath(file_okay=False, path_type=Path))
@click.option("--out", "out_path", type=OutputPath(dir_okay=False), default=None,
              callback=_suffix(".keras", what="--out"),
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
@click.option("--fit-images", type=click.IntRange(10), default=10000, show_default=True,
              help="Training images (seeded sample) for the out-of-distribution score's class statistics.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def calibrate(model_path, data, out_path, overwrite, val_fraction, seed, other_data, keep, fit_images, quiet):
    """Fit a trained MODEL's temperature and out-of-distribution score on its own dataset DATA (no retraining).

    The temperature makes the probabilities honest (fitted on the validation split by log-likelihood;
    the classes predicted do not change). The score measures how unlike the training images an image
    is, at every convolutional block; its threshold accepts --keep of the validation images, and
    `infer` refuses images above it. Both become part of the saved model, so every export carries them.
    `train` does this at its end; this command is for models trained before, or elsewhere. DATA must be
    the dataset the model was trained on (checked when the model records its files), unless --other-data.
    """
    _needs("calibration", ("tensorflow", "keras", "sklearn", "scipy"))
    from s3f_edge.train.calibrate import DATA_CHECK_NOTES, calibrate_file

    if out_path is None:
        from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

        bundled = model_path.resolve().parent == DEFAULT_MODEL_DIR.resolve()
        out_path = (Path("runs") / "default-model" if bundled else model_path.parent) / (
            model_path.stem + ".calibrated.keras")
    report = calibrate_file(model_path, data, out_path, val_fraction=val_fraction, seed=seed, keep=keep,
                            fit_images=fit_images, other_data=other_data, overwrite=overwrite, progress=not quiet)
    ece, ood, fitted = report["ece_validation"], report["ood"], report["fitted_on"]
    click.echo(f"temperature {report['temperature']:.3f}: validation ECE {ece['before']:.4f} -> {ece['after']:.4f}")
    click.echo(f"out-of-distribution score ({ood['method']}, {len(ood['blocks'])} blocks): images scoring over "
               f"{ood['threshold']:.3f} are refused ({ood['validation_refused']:.1%} of the validation split)")
    click.echo(f"fitted on {fitted['training_images']} training and {fitted['validation_images']} validation images "
               f"(validation split {fitted['val_fraction']}, seed {fitted['seed']})\nsaved: {out_path}")
    if fitted["data_check"] in DATA_CHECK_NOTES:
        click.echo(f"note: {DATA_CHECK_NOTES[fitted['data_check']]}")


def _batch_profile(ctx, param, value: str) -> tuple[int, int, int]:
    """--trt-batch as (min, opt, max): three batch sizes with 1 <= min <= opt <= max."""
    try:
        low, opt, high = (int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give min,opt,max batch sizes, e.g. 1,8,32") from None
    if not 1 <= low <= opt <= high:
        raise click.BadParameter(f"{value!r}: give min,opt,max with 1 <= min <= opt <= max, e.g. 1,8,32")
    return low, opt, high


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


@main.command()
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(".keras", what="MODEL (the trained model)"))
@click.option("--out", "out_dir", type=OutputPath(file_okay=False), default=None,
              help="Output folder (default: <model folder>/export).")
@overwrite_option("--out (and --triton): the earlier export's files are removed first, so no folder mixes two "
                  "models")
@click.option("--fft", type=click.Choice(FFT_LOWERINGS), default="matmul", show_default=True,
              help="How the SpectralFilter's FFT is lowered: 'matmul' (DFT as matrix products; every ONNX runtime "
                   "and TensorRT version) or 'dft' (standard ONNX DFT nodes; ONNX Runtime, TensorRT >= 11.2).")
@click.option("--opset", type=click.IntRange(13, 18), default=17, show_default=True,
              help="ONNX opset (DFT needs 17 or 18).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Also write an FP16 model (spectral block kept FP32) or a statically calibrated INT8 model.")
@click.option("--calib", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Folder of representative images for INT8 calibration (searched recursively; e.g. DATA/train).")
@click.option("--calib-images", type=click.IntRange(1), default=1024, show_default=True,
              help="INT8: how many of those images to calibrate on (a seeded random sample).")
@click.option("--calib-method", type=click.Choice(CALIBRATION_METHODS), default="percentile", show_default=True,
              help="INT8: how activation ranges are chosen from the calibration images.")
@click.option("--int8-weight-bits", type=click.Choice(["8", "7"]), default="8", show_default=True,
              help="INT8: 8-bit weights (more accurate; for TensorRT, ARM and x86 CPUs with VNNI) or 7-bit weights, "
                   "which ONNX Runtime also runs exactly on x86 CPUs without VNNI (there, 8-bit files are refused).")
@click.option("--images", "parity_images", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Real images for the parity check (default: 8 brain MRI images shipped with s3f-edge).")
@click.option("--trt", is_flag=True, help="Also build a TensorRT engine (needs an NVIDIA GPU and the gpu extra).")
@click.option("--trt-batch", default="1,8,32", show_default=True, callback=_batch_profile,
              help="TensorRT optimisation profile: min,opt,max batch.")
@click.option("--timing-cache", type=OutputPath(dir_okay=False), default=None,
              help="TensorRT timing cache to reuse across builds (default: <out>/timing.cache).")
@click.option("--triton", "triton_repo", type=OutputPath(file_okay=False), default=None,
              help="Also write a Triton Inference Server model repository here.")
@click.option("--class-names", "--classes", cls=AliasedOption, default=None,
              help="Comma-separated class names in output order, for models without s3f-edge metadata "
                   "(e.g. the original release's files).")
def export(model_path, out_dir, overwrite, fft, opset, precision, calib, calib_images, calib_method, int8_weight_bits,
           parity_images, trt, trt_batch, timing_cache, triton_repo, class_names):
    """Export a trained MODEL (.keras) to ONNX, checked and proven equal to Keras.

    Every SpectralFilter is lowered first (same weights, same outputs). The command fails if the
    graph is not valid standard ONNX of the opset, holds complex tensors, uses an op TensorRT's
    parser refuses (with --trt), or if ONNX Runtime's outputs differ from Keras's on real images
    and random inputs (fp32: max |p difference| <= 1e-4; fp16/int8: top-1 agreement >= 99%).
    Writes model.onnx and model.json (classes, preprocessing contract, provenance).
    """
    from s3f_edge.dependencies import EXPORT_STACK

    _needs("export", EXPORT_STACK)
    from s3f_edge.export.onnx_export import ExportOptions, export_model

    options = ExportOptions(
        out_dir=out_dir or model_path.parent / "export", fft=fft, opset=opset, precision=precision, calib=calib,
        calib_images=calib_images, calib_method=calib_method, int8_weight_bits=int(int8_weight_bits),
        parity_images=parity_images, trt=trt, trt_batch=trt_batch, timing_cache=timing_cache,
        triton_repo=triton_repo, class_names=_names(class_names), overwrite=overwrite,
    )
    result = export_model(model_path, options)
    click.echo(_table(["format", "file", "MB", "status", "seconds"],
                      [[r["format"], r["file"], r["size_mb"], r["status"], r["seconds"]] for r in result.rows]))
    click.echo()
    def accuracy(p):
        if p.reference_accuracy is None:
            return "-"
        return f"{p.reference_accuracy:.1%} -> {p.candidate_accuracy:.1%}"

    def agreement(p):
        ties = f" ({p.near_ties} near-tie{'s' if p.near_ties != 1 else ''} flipped)" if p.near_ties else ""
        return f"{p.top1_agreement:.1%}{ties}"

    scored = any(p.score_max_rel_diff is not None for results in result.parity.values() for p in results)
    score_headers = ["ood_score rel. diff", "same refusal"] if scored else []

    def score_cells(p):
        if not scored:
            return []
        same = "-" if p.score_decision_agreement is None else f"{p.score_decision_agreement:.1%}"
        return [f"{p.score_max_rel_diff:.2e}", same]

    click.echo(_table(["model", "inputs", "images", "max |p diff|", "top-1 agreement", "accuracy Keras -> ONNX",
                       *score_headers],
                      [[precision_name, p.inputs, p.count, f"{p.max_abs_diff:.2e}", agreement(p), accuracy(p),
                        *score_cells(p)] for precision_name, results in result.parity.items() for p in results]))


def _names(value: str | None) -> list[str] | None:
    """A comma-separated list option as a list (None when not given)."""
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _load_predictor(model_path: Path, providers: str | None, class_names: str | None):
    from s3f_edge.runtime.formats import load_predictor

    metadata = {"class_names": _names(class_names)} if class_names else None
    return load_predictor(model_path, providers=_names(providers), metadata=metadata)


@main.command()
@click.argument("folder", type=ExistingPath(file_okay=False, path_type=Path), cls=FolderAfterOptionalValue)
@click.option("--model", "model_path", type=ExistingPath(dir_okay=False, path_type=Path), default=None,
              callback=_suffix(*MODEL_SUFFIXES, what="--model"),
              help=f"A {', '.join(MODEL_SUFFIXES)} model exported by s3f-edge (default: the bundled model, "
                   "if this installation has one).")
@click.option("--batch-size", "--batch", "batch_size", cls=AliasedOption, type=click.IntRange(1), default=32,
              show_default=True, help="Images per model call.")
@click.option("--out", "output", type=OutputPath(dir_okay=False), default=Path("results.csv"),
              show_default=True, callback=_suffix(*RESULT_FORMATS, what="--out"),
              help="Results file: .csv, .jsonl or .json (chosen by the suffix).")
@click.option("--report", "report", type=OutputPath(dir_okay=False), default=None,
              callback=_suffix(".html", what="--report"),
              help="Also write a review page: one self-contained HTML file with each image, its answer, "
                   "probabilities and Grad-CAM overlay (with --explain); opens offline in any browser.")
@overwrite_option("--out (and the overlays in --explain, and --report)")
@click.option("--recursive", is_flag=True, help="Include sub-folders.")
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True, help="Parallel image decoders.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip files already in --out or its journal "
              "(same model, same folder and options).")
@click.option("--providers", default=None,
              help="ONNX Runtime providers in order, e.g. CUDAExecutionProvider,CPUExecutionProvider "
                   "(default: TensorRT, CUDA, CPU as available).")
@click.option("--class-names", "--classes", "class_names", cls=AliasedOption, default=None,
              help="Comma-separated class names, only for models without s3f-edge metadata.")
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
          class_names, explain_dir, explain_classes, accept_ood, ood_threshold, ray_address, ray_actors, ray_cpus,
          ray_gpus, quiet):
    """Classify every file in FOLDER: one row per file, a prediction or the reason there is none.

    Rows are sorted by path and hold: path, status, reason, predicted class, every class
    probability, the out-of-distribution score, model name and sha256. Status is ok (a class),
    refused (the image is unlike the model's training images: no class, probabilities kept for
    audit) or error (unreadable). The output is written atomically; --resume never duplicates a
    row. Exit code 0 when every file was answered (refusing is an answer), 3 when some failed.
    --report writes a page to review the rows by eye (also: s3f-edge report RESULTS).
    """
    from s3f_edge.runtime.infer import infer_folder
    from s3f_edge.runtime.predictor import default_model

    if resume and overwrite:
        raise click.UsageError("--resume continues --out and --overwrite replaces it: give one of them")
    if accept_ood and ood_threshold is not None:
        raise click.UsageError("--accept-ood refuses nothing and --ood-threshold sets what to refuse: give one of them")
    if ray_address is not None and explain_dir is not None:
        raise click.UsageError("--explain runs on this machine only: drop --ray, or --explain")
    ray_settings = {"--ray-actors": (ray_actors, 2), "--ray-cpus": (ray_cpus, 1.0), "--ray-gpus": (ray_gpus, 0.0)}
    stray = [name for name, (value, default) in ray_settings.items() if value != default]
    if ray_address is None and stray:
        raise click.UsageError(f"{stray[0]} applies to --ray only: add --ray, or drop it")
    if model_path is None:
        model_path = default_model()
    if report is not None:  # checked before the long work; a resumed run's page is redrawn from all its rows
        from s3f_edge.report.results_page import check_report_path

        check_report_path(report, overwrite or resume)
    if ray_address is not None:  # the driver of a cluster run may lack the GPU a TensorRT engine needs
        from s3f_edge.runtime.cluster import driver_model

        predictor = driver_model(model_path, _names(providers),
                                 {"class_names": _names(class_names)} if class_names else None)
    else:
        predictor = _load_predictor(model_path, providers, class_names)
    set_interrupt_hint(lambda: "rows already answered are kept; run the same command with --resume (instead of "
                               "--overwrite) to continue" if overwrite else
                       "rows already answered are kept; run the same command with --resume to continue")
    log = None if quiet else lambda line: click.echo(line, err=True)
    if ray_address is not None:
        from s3f_edge.runtime.cluster import infer_folder_on_ray

        summary = infer_folder_on_ray(
            folder, predictor, model_path, output, address=ray_address, actors=ray_actors, cpus_per_actor=ray_cpus,
            gpus_per_actor=ray_gpus, batch_size=batch_size, recursive=recursive, workers=workers, resume=resume,
            progress=not quiet, overwrite=overwrite, log=log, accept_ood=accept_ood, ood_threshold=ood_threshold,
            metadata={"class_names": _names(class_names)} if class_names else None, providers=_names(providers))
    else:
        summary = infer_folder(folder, predictor, output, batch_size=batch_size, recursive=recursive,
                               workers=workers, resume=resume, progress=not quiet, explain_dir=explain_dir,
                               explain_classes=set(_names(explain_classes) or []) or None, overwrite=overwrite,
                               log=log, accept_ood=accept_ood, ood_threshold=ood_threshold)
    rows = [[name, summary.per_class.get(name, 0)] for name in predictor.class_names]
    rows += [["(refused)", summary.refused], ["(errors)", summary.failed]]
    click.echo(_table(["class", "files"], rows))
    done = f", {summary.skipped_as_done} already done" if summary.skipped_as_done else ""
    if summary.errors_in_output > summary.failed:
        done += f" ({summary.errors_in_output - summary.failed} of them error rows)"
    click.echo(f"\n{summary.succeeded} ok, {summary.refused} refused, {summary.failed} failed{done}; "
               f"{summary.images_per_second:.1f} images/s; results: {summary.output}")
    if report is not None:
        from s3f_edge.report.results_page import write_results_report

        run = {"Folder": str(folder), "Backend": f"{predictor.backend} ({predictor.provider})",
               "Run": f"{summary.succeeded + summary.refused + summary.failed} file(s) in {summary.seconds:.1f} s"
                      + (f", {summary.skipped_as_done} answered by an earlier run" if summary.skipped_as_done else "")}
        page = write_results_report(summary.output, report, explain_dir=explain_dir, run=run, workers=workers,
                                    progress=not quiet, overwrite=True, require_overlays=False)
        click.echo(f"review page: {page}")
    if summary.errors_in_output:  # after --resume, earlier runs' error rows count too: the output is what's judged
        sys.exit(EXIT_SOME_FILES_FAILED)


@main.command()
@click.argument("results", nargs=-1, required=True, type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(*RESULT_FORMATS, what="RESULTS"))
@click.option("--out", "output", type=OutputPath(dir_okay=False), default=Path("review.html"),
              show_default=True, callback=_suffix(".html", what="--out"), help="The page to write.")
@click.option("--explain", "explain_dir", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="The folder infer --explain wrote Grad-CAM overlays into: shown beside each image.")
@click.option("--thumbnail-size", type=click.IntRange(16, 512), default=96, show_default=True,
              help="Longer side of each embedded image, in pixels (about 3 KB per image at 96).")
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True, help="Parallel image decoders.")
@overwrite_option("--out")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def report(results, output, explain_dir, thumbnail_size, workers, overwrite, quiet):
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
                                log=lambda line: click.echo(f"note: {line}", err=True))
    click.echo(f"review page: {page}")


@main.command()
@click.argument("keras_model", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(".keras", what="KERAS_MODEL (the model the files were exported from)"))
@click.argument("deployed", nargs=-1, required=True, type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(*(s for s in MODEL_SUFFIXES if s != ".keras"), what="DEPLOYED"))
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

    report = verify_backends(keras_model, list(deployed), images, limit, _names(providers))
    click.echo(_table(["model", "backend", "provider", "precision", "images", "max |p diff|", "top-1",
                       "ood_score rel. diff", "result"],
                      [[Path(r["model"]).name, r["backend"], r["provider"], r["precision"], r["count"],
                        f"{r['max_abs_diff']:.2e}", f"{r['top1_agreement']:.1%}",
                        "-" if r["score_max_rel_diff"] is None else f"{r['score_max_rel_diff']:.2e}",
                        "; ".join(r["failures"]) or "ok"] for r in report]))
    if any(r["failures"] for r in report):
        sys.exit(EXIT_ERROR)


def _int_list(value: str, name: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{name}: {value!r} is not a comma-separated list of integers") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{name}: give positive integers, e.g. 1,8,32")
    return numbers


def _image_folder(ctx, param, value):
    """--images of bench: a folder of images, 'random', or None; a folder is checked like any path argument."""
    if value is None or value == "random":
        return value
    folder = ExistingPath(file_okay=False, path_type=Path).convert(value, param, ctx)
    _require_images(folder, param.get_error_hint(ctx))
    return folder


def _require_images(folder: Path | None, option: str, recursive: bool = True) -> None:
    """An InputError before any work when ``folder`` holds no image file."""
    from s3f_edge.data.files import image_files
    from s3f_edge.data.preprocess import IMAGE_SUFFIXES
    from s3f_edge.errors import InputError

    if folder is not None and not image_files(folder, limit=1):
        raise InputError(f"{option}: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}; give a folder of images")


def _check_outputs(paths: list[tuple[Path | None, str]], overwrite: bool) -> None:
    """The output rule for single-file outputs (``s3f_edge.outputs``): writable, and no earlier result unless
    --overwrite (which the new file replaces when it is written, so a failed run loses nothing)."""
    from s3f_edge.outputs import ensure_writable, refuse_existing

    for path, option in paths:
        if path is not None:
            ensure_writable(path, option)
            refuse_existing([path], overwrite=overwrite, option=option)


@main.command()
@click.argument("models", nargs=-1, required=True, type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(*MODEL_SUFFIXES, what="MODELS"))
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
@click.option("--images", default=None, callback=_image_folder,
              help="Folder of real input images, or 'random' for fresh random tensors (default: the packaged images).")
@click.option("--end-to-end", "e2e_dir", type=ExistingPath(file_okay=False, path_type=Path), default=None,
              help="Also time files decoded to written rows (`infer`) over this folder.")
@click.option("--gemm/--no-gemm", default=True, show_default=True,
              help="Measure this machine's float32 GEMM rate and report achieved FLOP/s as a fraction of it.")
@click.option("--json", "json_out", type=OutputPath(dir_okay=False), default=None,
              callback=_suffix(".json", what="--json"), help="Write results as JSON.")
@click.option("--plot", "plot_out", type=OutputPath(dir_okay=False), default=None,
              callback=_suffix(".png", what="--plot"), help="Write a PNG of latency against batch per backend.")
@overwrite_option("--json and --plot")
def bench(models, backends, batches, duration, warmup, images, e2e_dir, gemm, json_out, plot_out, overwrite):
    """Latency (p50/p90/p99/max, never clipped), throughput and cold start for each MODEL, backend and batch.

    A backend that fails (or gives NaN/inf outputs) becomes a row saying why, and the exit code is 1;
    so is a run in which no backend could run at all.
    FLOPs per image come from the first .keras model given (spectral layers counted at their FFT
    cost); achieved FLOP/s is compared with a large float32 GEMM measured in the same run.
    """
    import os
    import platform

    from s3f_edge.bench.runner import bench_models, plot
    from s3f_edge.dependencies import missing
    from s3f_edge.outputs import write_json

    wanted = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = set(wanted) - set(BACKENDS)
    if unknown:
        raise click.BadParameter(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}",
                                 param_hint="'--backends'")
    batch_sizes = _int_list(batches, "--batch-sizes")
    _require_images(e2e_dir, "--end-to-end")
    _check_outputs([(json_out, "--json"), (plot_out, "--plot")], overwrite)
    flops = None
    keras_models = [m for m in models if m.suffix == ".keras"]
    if keras_models and not missing("tensorflow", "keras"):
        from s3f_edge.bench.flops import model_flops
        from s3f_edge.model import load_model

        flops = model_flops(load_model(keras_models[0]))
        click.echo(f"FLOPs per image ({keras_models[0].name}): {flops['total_fft'] / 1e9:.2f} G with FFT spectral "
                   f"layers ({flops['spectral_fft'] / 1e9:.3f} G spectral), {flops['total_matmul'] / 1e9:.2f} G as "
                   f"executed with DFT-as-matmul ({flops['spectral_matmul'] / 1e9:.3f} G spectral)")
    gemm_rate, rates = None, {}
    if gemm:
        from s3f_edge.bench.gemm import gemm_rates

        rates = gemm_rates()
        gemm_rate = max(rates.values())
        click.echo("float32 GEMM 2048^2: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items()))
    results, skipped = bench_models(list(models), wanted, batch_sizes, duration, warmup, images, e2e_dir,
                                    flops["total_fft"] if flops else None, gemm_rate,
                                    log=lambda m: click.echo(m, err=True))
    dash = lambda value: "-" if value is None else value  # noqa: E731
    click.echo(_table(
        ["model", "backend", "mode", "batch", "p50 ms", "p90 ms", "p99 ms", "max ms", "img/s", "cold s", "GFLOP/s",
         "of GEMM", "status"],
        [[r.model, r.backend, r.mode, dash(r.batch), dash(r.p50_ms), dash(r.p90_ms), dash(r.p99_ms), dash(r.max_ms),
          dash(r.images_per_second), dash(r.cold_start_s), dash(r.gflops_per_second),
          "-" if r.fraction_of_gemm is None else f"{r.fraction_of_gemm:.0%}", r.status] for r in results]))
    for note in skipped:
        click.echo(f"skipped: {note}")
    machine = {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "python": platform.python_version()}
    if json_out:
        write_json(json_out, {"machine": machine, "gemm_flops_per_second": rates, "flops_per_image": flops,
                              "results": [r.to_dict() for r in results], "skipped": skipped})
    ok = [r for r in results if r.status == "ok"]
    if plot_out and ok:
        plot(ok, plot_out)
    if len(ok) < len(results):
        click.secho(f"{len(results) - len(ok)} measurement(s) failed; see the status column", err=True, fg="red")
        sys.exit(EXIT_ERROR)


@main.command()
@click.argument("model_path", metavar="MODEL", type=ExistingPath(dir_okay=False, path_type=Path),
                callback=_suffix(".keras", what="MODEL (the trained model)"))
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

    batch_sizes = tuple(_int_list(batches, "--batch-sizes"))
    _needs("the accuracy x speed matrix", EXPORT_STACK)
    _require_images(calib, "--calib")
    from s3f_edge.bench.matrix import accuracy_speed_matrix, markdown

    result = accuracy_speed_matrix(model_path, out_dir, data, calib, batch_sizes, duration, fft=fft, trt=trt,
                                   overwrite=overwrite, log=lambda message: click.echo(message, err=True))
    click.echo(markdown(result))
    click.echo(f"written: {out_dir / 'matrix.json'}, {out_dir / 'matrix.md'}")


@main.command("fft-check")
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
    import numpy as np

    from s3f_edge.data.files import image_files
    from s3f_edge.data.preprocess import IMAGE_SUFFIXES, Preprocessing, load_image
    from s3f_edge.errors import InputError

    _needs("the FFT check", ("tensorflow", "keras"))
    from s3f_edge.model.fft_check import compare_forms

    files = [images] if images.is_file() else image_files(images, limit)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {images}; give an image or a folder of images")
    rows, worst = [], 0.0
    for size in sizes:
        height, width = _size(size)
        batch = np.stack([load_image(p, Preprocessing(height=height, width=width, channels=1)) for p in files])
        errors = compare_forms(batch, filters)
        worst = max(worst, *errors.values())
        rows.append([f"{height}x{width}", len(files), f"{errors['fft']:.2e}", f"{errors['matmul']:.2e}"])
    click.echo(_table(["size", "images", "fft rel. error", "matmul rel. error"], rows))
    if worst > tolerance:
        click.secho(f"FAILED: worst relative error {worst:.2e} > {tolerance:.0e}", fg="red")
        sys.exit(EXIT_ERROR)
    click.echo(f"ok: both forms within {tolerance:.0e} of float64 numpy")


if __name__ == "__main__":
    main()
