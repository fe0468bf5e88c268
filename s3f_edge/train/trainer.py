"""`s3f-edge train`: the original recipe (spec section 7) on a folder dataset, with a clean protocol."""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from s3f_edge.data.folders import FolderDataset, discover, load_split, stratified_split, write_skipped
from s3f_edge.data.preprocess import Preprocessing
from s3f_edge.errors import InputError, MissingFileError, NonFiniteOutputError, OutputExistsError
from s3f_edge.model.metadata import package_versions
from s3f_edge.model.presets import get_preset
from s3f_edge.outputs import claim_outputs, ensure_writable, write_json

PAPER_PROTOCOL_WARNING = (
    "PAPER PROTOCOL: the test set was used as the validation set for checkpoint selection, early "
    "stopping and the learning-rate schedule, as in the original work. Test metrics are optimistic "
    "and are not an unbiased estimate of performance."
)


@dataclass
class TrainOptions:
    """Every option of a run; defaults are the original recipe, with a held-out validation split."""

    data_dir: str
    out_dir: str
    preset: str = "brisc2025"
    model: str = "s3f"  # s3f | baseline | spectral
    image_size: tuple[int, int] | None = None  # (H, W); default: the preset's
    variant: str | None = None
    fusion: str | None = None
    epochs: int | None = None
    batch_size: int = 16
    learning_rate: float = 3e-4
    lr_factor: float = 0.2
    min_learning_rate: float = 1e-6
    lr_patience: int | None = None
    patience: int | None = None
    val_fraction: float = 0.15
    seed: int = 0
    paper_protocol: bool = False
    class_weights: bool = True
    precise_bn: bool = True  # population BatchNorm statistics before every selection and checkpoint
    precise_bn_images: int = 1024  # training images sampled (seeded) for those statistics
    augment: bool = False
    mixed_precision: bool = False  # float16 compute; every SpectralFilter stays float32
    strategy: str = "auto"  # auto | mirrored | multiworker (TF_CONFIG)
    workers: int = 4
    cache: str = "memory"  # memory | disk (memory-mapped, reused by later runs)
    cache_dir: str | None = None  # default: s3f_edge.data.cache.default_cache_dir()
    calibrate: bool = True  # fit the temperature and the out-of-distribution score at the end (clean protocol)
    verbose: int = 1
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_saved(cls, saved: dict, **overrides) -> "TrainOptions":
        """The options of a run from its config.json (for --resume); runs from before an option existed
        keep the behaviour they were trained with."""
        values = {"precise_bn": False, **saved, **overrides}
        values["image_size"] = tuple(values["image_size"]) if values.get("image_size") else None
        return cls(**values)

    def resolved(self) -> "TrainOptions":
        """Fill preset defaults (epochs, patiences, size) so config.json states every value used."""
        preset = get_preset(self.preset)
        values = asdict(self)
        values["image_size"] = tuple(self.image_size or preset.input_shape[:2])
        values["variant"] = self.variant or preset.variant
        values["fusion"] = self.fusion or preset.fusion
        values["epochs"] = self.epochs if self.epochs is not None else preset.epochs
        values["lr_patience"] = self.lr_patience if self.lr_patience is not None else preset.lr_patience
        values["patience"] = self.patience if self.patience is not None else preset.early_stop_patience
        return TrainOptions(**values)


# What a run directory holds: the files `train` writes (and, with --overwrite, removes first).
RUN_FILES = ("model.keras", "last.keras", "config.json", "state.json", "history.csv", "metrics.json", "skipped.csv",
             "training_curves.png")
RUN_FILE_PATTERNS = ("validation_*.png", "test_*.png")
# What other commands write into a run directory by default, from its model: --overwrite refuses to leave them
# beside a new model, and does not delete them either (they are the user's exports and reports).
DERIVED_PATTERNS = ("export", "evaluate-*", "*.precise-bn.keras")


def run_files(run_dir: Path) -> list[Path]:
    """The files of an earlier run in ``run_dir``: only names `train` writes.

    Returns:
        Existing and not-yet-existing paths of the fixed names, and the existing plots.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [run_dir / name for name in RUN_FILES]
    return found + [p for pattern in RUN_FILE_PATTERNS for p in run_dir.glob(pattern)]


def derived_outputs(run_dir: Path) -> list[Path]:
    """Exports and reports other commands made from the model in ``run_dir`` (their default locations)."""
    run_dir = Path(run_dir)
    return sorted(p for pattern in DERIVED_PATTERNS for p in run_dir.glob(pattern)) if run_dir.is_dir() else []


def is_resumable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that --resume can continue (at least one finished epoch)."""
    return all((Path(run_dir) / name).exists() for name in ("config.json", "state.json", "last.keras"))


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not {what} ({error}); start a new run with --out") from None


def saved_options(run_dir: Path) -> dict:
    """The options a run was started with, from its config.json (for --resume).

    Raises:
        MissingFileError: ``run_dir`` holds no resumable run.
        InputError: its config.json is not a run's configuration.
    """
    config = Path(run_dir) / "config.json"
    if not is_resumable(run_dir):
        raise MissingFileError(f"{run_dir} holds no resumable run (config.json, state.json and last.keras, written "
                               "when the first epoch ends); start it again with --out and --overwrite")
    try:
        return _read_json(config, "a run's configuration")["options"]
    except (KeyError, TypeError) as error:
        raise InputError(f"{config} is not a run's configuration (no {error}); start a new run with --out") from None


def _log(options: TrainOptions, message: str) -> None:
    if options.verbose:
        print(message, flush=True)


def _selection_split(dataset: FolderDataset, options: TrainOptions):
    """(fit split, selection split, name) under the clean or the paper protocol."""
    if options.paper_protocol:
        if dataset.test is None:
            raise InputError("--paper-protocol selects on the test set, but the dataset has no test/ folder")
        return dataset.train, dataset.test, "test (paper protocol)"
    fit, held_out = stratified_split(dataset.train, options.val_fraction, options.seed)
    return fit, held_out, "validation"


def _load(split, contract: Preprocessing, options: TrainOptions, progress: bool = False):
    """Decoded pixels of a split: into memory, or through the disk cache (decoded once, memory-mapped)."""
    if options.cache == "disk":
        from s3f_edge.data.cache import default_cache_dir, load_split_cached

        return load_split_cached(split, contract, options.cache_dir or default_cache_dir(), options.workers, progress)
    if options.cache != "memory":
        raise InputError(f"cache must be 'memory' or 'disk', got {options.cache!r}")
    return load_split(split, contract, options.workers, progress=progress)


def _precise_bn(options: TrainOptions, distribution, images):
    """model -> None: population BatchNorm statistics over a seeded sample of the training images, as
    training sees them (augmented under --augment: the layers after each BatchNorm learned to expect
    that distribution), split over the workers and pooled under multi-worker training."""
    from s3f_edge.train.pipeline import AugmentedRows
    from s3f_edge.train.precise_bn import recompute_batchnorm_statistics

    several = distribution.custom_loop
    if options.augment:
        images = AugmentedRows(images, options.seed)

    def refresh(model) -> None:
        recompute_batchnorm_statistics(
            model, images, sample_size=options.precise_bn_images, seed=options.seed,
            shard=(distribution.num_workers, distribution.worker_index) if several else None,
            all_reduce=distribution.sum_over_replicas if several else None)

    return refresh


def train(options: TrainOptions, resume: bool = False, overwrite: bool = False) -> Path | None:
    """Train one model; returns the run directory (model.keras, metrics.json, config.json, ...).

    Args:
        options: every option of the run (``options.out_dir`` is the run directory, also when resuming).
        resume: continue the run in ``options.out_dir`` after its last finished epoch.
        overwrite: replace an earlier run's files in ``options.out_dir``; without it, such a directory is refused.

    Returns:
        The run directory; None on a non-chief worker of a multi-worker run (the chief writes the run directory).

    Raises:
        InputError: an invalid option, or a dataset or run that does not fit it (e.g. --resume with other files).
        DatasetError: the data folder cannot be used as a dataset, or split as asked.
        MissingFileError: ``resume``, but ``options.out_dir`` holds no resumable run.
        OutputExistsError: an earlier run in ``options.out_dir`` and neither ``resume`` nor ``overwrite``, or (with
            ``overwrite``) exports and reports made from its model still beside it.
        OutputError: ``options.out_dir`` (or the disk cache) cannot be written.
        NonFiniteOutputError: no epoch gave a model with finite outputs.
        WorkersDisagreeError: multi-worker training whose workers reached different selection, learning-rate or
            stop decisions.
    """
    import keras

    from s3f_edge.train.distribute import make_distribution

    options = options.resolved()
    if options.precise_bn_images < 1:
        raise InputError(f"precise_bn_images must be at least 1, got {options.precise_bn_images}")
    distribution = make_distribution(options.strategy)
    _log(options, f"training on {distribution.description}")
    # --mixed-precision sets Keras's global policy; the caller gets its own back, whatever happens.
    caller_policy = keras.mixed_precision.global_policy()
    try:
        if distribution.is_chief:
            return _train(options, resume, overwrite, distribution, Path(options.out_dir))
        # Other workers write their callbacks' files to a scratch directory that disappears with them.
        with tempfile.TemporaryDirectory(prefix="s3f-edge-worker-") as scratch:
            _train(options, resume, overwrite, distribution, Path(scratch))
        return None
    finally:
        keras.mixed_precision.set_global_policy(caller_policy)


def _calibrate(model, model_path: Path, fit_x, fit_y, sel_x, sel_y, dataset: FolderDataset, options: TrainOptions):
    """Fit the temperature and the out-of-distribution score on the run's own images; save the calibrated model
    over the selected one. Returns (calibrated model, calibration)."""
    from s3f_edge.model.metadata import read_metadata, save_model_atomically
    from s3f_edge.train.calibrate import DEFAULT_FIT_IMAGES, calibrate_model, calibration_sample
    from s3f_edge.train.precise_bn import Rows

    picked = calibration_sample(fit_y, DEFAULT_FIT_IMAGES, options.seed)
    provenance = {"data_file_list_sha256": dataset.file_list_hash(), "val_fraction": options.val_fraction,
                  "seed": options.seed}
    calibrated_model, calibration = calibrate_model(model, Rows(fit_x, picked), fit_y[picked], sel_x, sel_y,
                                                    provenance=provenance, batch_size=options.batch_size * 2)
    save_model_atomically(calibrated_model, model_path, {**read_metadata(model_path), "calibration": calibration})
    _log(options, f"calibrated: temperature {calibration['temperature']:.3f} (validation ECE "
                  f"{calibration['ece_validation']['before']:.4f} -> {calibration['ece_validation']['after']:.4f}); "
                  f"images scoring over {calibration['ood']['threshold']:.2f} are refused as unlike the training "
                  f"images ({calibration['ood']['validation_refused']:.1%} of validation)")
    return calibrated_model, calibration


@dataclass
class _Run:
    """What one training run carries from step to step (``_train``)."""

    options: TrainOptions
    resume: bool
    distribution: object
    write_dir: Path  # where this process writes: the run directory (chief) or a scratch one (other workers)
    run_dir: Path
    dataset: FolderDataset
    fit_split: object
    selection_split: object
    selection_name: str
    state: dict | None = None  # a resumed run's counters
    contract: Preprocessing | None = None
    sigmoid_head: bool = False
    fit_x: object = None
    fit_y: np.ndarray | None = None
    sel_x: object = None
    sel_y: np.ndarray | None = None
    skipped: list = field(default_factory=list)
    decode_seconds: float = 0.0
    metadata: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    model: object = None
    initial_epoch: int = 0
    selection: object = None
    train_seconds: float = 0.0
    distributed: dict | None = None


def _train(options: TrainOptions, resume: bool, overwrite: bool, distribution, write_dir: Path) -> Path:
    """One run, in named steps: check and prepare the run directory, load the data, record the run, build or
    resume the model, fit, and (on the chief) select, calibrate and report."""
    run = _prepare_run_directory(options, resume, overwrite, distribution, write_dir)
    _load_data(run)
    _record_run(run)
    _build_or_resume(run)
    _fit(run)
    if not distribution.is_chief:
        return write_dir
    return _final_report(run)


def _prepare_run_directory(options: TrainOptions, resume: bool, overwrite: bool, distribution,
                           write_dir: Path) -> _Run:
    """Everything that can be refused, checked before a file is written or a pixel decoded."""
    run_dir = Path(options.out_dir)
    dataset = discover(options.data_dir)
    fit_split, selection_split, selection_name = _selection_split(dataset, options)
    state = None
    if resume:
        saved_options(run_dir)  # refuses a directory that holds no resumable run
        state = _read_json(run_dir / "state.json", "a run's state")
        previous = _read_json(run_dir / "config.json", "a run's configuration")
        if previous.get("file_list_sha256") != dataset.file_list_hash():
            raise InputError(f"the files of {options.data_dir} differ from those {run_dir} was trained on; resume "
                             "with the same dataset, or start a new run with --out")
    elif distribution.is_chief:
        ensure_writable(run_dir, "--out", folder=True)
        derived = derived_outputs(run_dir)
        if derived and overwrite:
            names = ", ".join(p.name for p in derived)
            raise OutputExistsError(f"{run_dir} also holds outputs made from its earlier model ({names}); remove them "
                                    "first, or choose another --out (a new model beside an old model's export would "
                                    "mix two models)")
        claim_outputs(run_files(run_dir), overwrite=overwrite, instead=f"--resume {run_dir} to continue the run")
    if options.cache == "disk":
        from s3f_edge.data.cache import default_cache_dir

        ensure_writable(options.cache_dir or default_cache_dir(), "--cache-dir", folder=True)
    write_dir.mkdir(parents=True, exist_ok=True)
    return _Run(options, resume, distribution, write_dir, run_dir, dataset, fit_split, selection_split,
                selection_name, state)


def _load_data(run: _Run) -> None:
    """Decode the fit and selection splits (what cannot be read is listed, never dropped silently)."""
    options, dataset = run.options, run.dataset
    preset = get_preset(options.preset)
    height, width = options.image_size
    run.contract = Preprocessing(height=height, width=width, channels=preset.input_shape[2])
    run.sigmoid_head = preset.sigmoid_head and len(dataset.class_names) == 2
    test = len(dataset.test) if dataset.test else 0
    _log(options, f"classes: {dataset.class_names}; train {len(run.fit_split)}, {run.selection_name} "
                  f"{len(run.selection_split)}, test {test}; {height}x{width}, up to {options.epochs} epochs")
    if "CPU" in run.distribution.description and height * width > 128 * 128:
        _log(options, f"no GPU: {height}x{width} trains slowly on a CPU (the time per epoch is shown after the first); "
                      "--image-size 64 or 128 trains several times faster")
    started = time.perf_counter()
    run.fit_x, run.fit_y, failures = _load(run.fit_split, run.contract, options, progress=bool(options.verbose))
    run.sel_x, run.sel_y, sel_failures = _load(run.selection_split, run.contract, options)
    run.skipped = dataset.skipped + failures + sel_failures
    run.decode_seconds = time.perf_counter() - started
    if len(np.unique(run.fit_y)) < len(dataset.class_names):
        raise InputError("after skipping unreadable files, some class has no training image left")


def _record_run(run: _Run) -> None:
    """The model's metadata, config.json (every option used) and skipped.csv."""
    options, dataset = run.options, run.dataset
    run.metadata = {
        "format": "s3f-edge-model", "class_names": dataset.class_names, "preprocessing": run.contract.to_dict(),
        "preset": options.preset, "kind": options.model, "variant": options.variant, "fusion": options.fusion,
        "sigmoid_head": run.sigmoid_head, "protocol": "paper" if options.paper_protocol else "clean",
        "batchnorm_statistics": (f"population statistics over {min(options.precise_bn_images, len(run.fit_y))} "
                                 f"training images{' (augmented)' if options.augment else ''}, dropout off "
                                 "(precise BatchNorm)")
                                if options.precise_bn else
                                "moving averages from training (original recipe)",
        "data_file_list_sha256": dataset.file_list_hash(),
        "versions": package_versions("tensorflow", "keras", "numpy", "scikit-learn"),
    }
    if not options.paper_protocol:  # so that `s3f-edge calibrate` can carve the same validation split again
        run.metadata["validation_split"] = {"fraction": options.val_fraction, "seed": options.seed}
    counts = {"train": run.fit_split.counts(dataset.class_names),
              run.selection_name: run.selection_split.counts(dataset.class_names),
              "test": dataset.test.counts(dataset.class_names) if dataset.test else None}
    run.config = {
        "options": {**asdict(options), "image_size": list(options.image_size)},
        "class_names": dataset.class_names, "counts": counts,
        "skipped": len(run.skipped), "file_list_sha256": dataset.file_list_hash(),
        "preprocessing": run.contract.to_dict(), "versions": run.metadata["versions"],
        "protocol": PAPER_PROTOCOL_WARNING if options.paper_protocol else
        "clean: a stratified validation split carved from train drives selection; test is scored once at the end",
    }
    write_json(run.write_dir / "config.json", run.config)
    write_skipped(run.write_dir / "skipped.csv", run.skipped)
    if run.skipped:
        _log(options, f"skipped {len(run.skipped)} unreadable or non-image files (see {run.write_dir / 'skipped.csv'})")


def _build_or_resume(run: _Run) -> None:
    """A new compiled model, or the last checkpoint of the run being resumed (its history cut to match)."""
    import keras

    from s3f_edge.model import build_model, load_model
    from s3f_edge.train.callbacks import truncate_history

    options = run.options
    keras.utils.set_random_seed(options.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if options.mixed_precision else "float32")
    with run.distribution.strategy.scope():
        if run.resume:
            run.model = load_model(run.run_dir / "last.keras", compile=True)
            truncate_history(run.write_dir / "history.csv", run.state["epochs_done"], options.learning_rate)
            run.initial_epoch = run.state["epochs_done"]
            _log(options, f"resuming after epoch {run.initial_epoch}")
            return
        run.model = build_model(
            options.preset, kind=options.model, input_shape=run.contract.input_shape,
            num_classes=len(run.dataset.class_names), variant=options.variant, fusion=options.fusion,
            sigmoid_head=run.sigmoid_head,
        )
        run.model.compile(
            optimizer=keras.optimizers.Adam(options.learning_rate),
            loss="binary_crossentropy" if run.sigmoid_head else "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )


def _callbacks(run: _Run) -> list:
    """Selection on the validation split, the learning-rate schedule, the crash-safe run state, the time estimate."""
    import keras

    from s3f_edge.train.callbacks import BudgetNote, RunState, ValidationSelection

    options, state = run.options, run.state
    run.selection = ValidationSelection(
        run.sel_x, run.sel_y, run.write_dir / "model.keras", run.metadata, options.patience, run.sigmoid_head,
        options.batch_size, best_score=state["best_score"] if state else -1.0, wait=state["wait"] if state else 0,
        before_scoring=_precise_bn(options, run.distribution, run.fit_x) if options.precise_bn else None,
    )
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=options.lr_factor, patience=options.lr_patience, min_lr=options.min_learning_rate,
        verbose=options.verbose,
    )
    if state:
        plateau.wait, plateau.best = state["plateau"]["wait"], state["plateau"]["best"]
        plateau.cooldown_counter = state["plateau"]["cooldown_counter"]
        plateau._reset = lambda: None  # keep the restored counters when fit() starts
    callbacks = [run.selection, plateau, RunState(run.write_dir, run.selection, plateau, run.metadata)]
    if options.verbose and run.distribution.is_chief:
        callbacks.append(BudgetNote(options.epochs, lambda line: _log(options, line)))
    return callbacks


def _fit(run: _Run) -> None:
    """Train the remaining epochs: Keras's fit on one device or several local ones, the custom loop across hosts."""
    from s3f_edge.train.loop import fit_multiworker
    from s3f_edge.train.pipeline import input_pipeline

    options, distribution = run.options, run.distribution
    class_weight = None
    if options.class_weights:
        from sklearn.utils.class_weight import compute_class_weight

        weights = compute_class_weight("balanced", classes=np.arange(len(run.dataset.class_names)), y=run.fit_y)
        class_weight = {i: float(w) for i, w in enumerate(weights)}
    callbacks = _callbacks(run)
    started = time.perf_counter()
    finished = bool(run.state and run.state.get("stopped")) or run.initial_epoch >= options.epochs
    if not finished and distribution.custom_loop:
        run.distributed = fit_multiworker(
            run.model, distribution, run.fit_x, run.fit_y, epochs=options.epochs, initial_epoch=run.initial_epoch,
            batch_size=options.batch_size, seed=options.seed, augment=options.augment, class_weight=class_weight,
            sigmoid_head=run.sigmoid_head, callbacks=callbacks, verbose=options.verbose,
        )
        print(f"worker {distribution.worker_index + 1}/{distribution.num_workers}: trained on "
              f"{run.distributed['examples_seen_by_this_worker']} images; weights sha256 "
              f"{run.distributed['weights_sha256']}", flush=True)
    elif not finished:
        run.model.fit(
            input_pipeline(run.fit_x, run.fit_y, options.batch_size, options.seed, options.augment),
            epochs=options.epochs, initial_epoch=run.initial_epoch, class_weight=class_weight, callbacks=callbacks,
            verbose=options.verbose,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
        )
    run.train_seconds = time.perf_counter() - started


def _final_report(run: _Run) -> Path:
    """The selected model, calibrated; the test set touched once, here; metrics.json and the plots."""
    from s3f_edge.model import load_model
    from s3f_edge.train.evaluate import evaluate_arrays
    from s3f_edge.train.metrics import plot_history

    options, dataset, run_dir = run.options, run.dataset, run.run_dir
    if not (run_dir / "model.keras").exists():
        raise NonFiniteOutputError(f"no epoch gave a model with finite outputs on the {run.selection_name} split, so "
                                   "none was selected; lower the learning rate (--lr) and train again")
    best = load_model(run_dir / "model.keras")
    calibration = None
    if options.calibrate and not options.paper_protocol:
        from s3f_edge.train.calibrate import MIN_IMAGES

        if min(len(run.fit_y), len(run.sel_y)) >= MIN_IMAGES:
            best, calibration = _calibrate(best, run_dir / "model.keras", run.fit_x, run.fit_y, run.sel_x, run.sel_y,
                                           dataset, options)
        else:
            _log(options, f"not calibrated: fewer than {MIN_IMAGES} training or validation images")
    report = {
        "protocol": run.config["protocol"],
        "selection_split": run.selection_name,
        "best_selection_score": run.selection.best_score,
        "timing": {"decode_seconds": round(run.decode_seconds, 2), "train_seconds": round(run.train_seconds, 2),
                   "train_images_per_second": None},
        "skipped_files": len(run.skipped),
        "distribution": run.distributed or {"strategy": run.distribution.name,
                                            "description": run.distribution.description},
        **({"calibration": calibration} if calibration is not None else {}),
        run.selection_name: evaluate_arrays(best, run.sel_x, run.sel_y, dataset.class_names, run_dir, "validation",
                                            options.batch_size),
    }
    if dataset.test is not None and not options.paper_protocol:
        test_x, test_y, test_failures = _load(dataset.test, run.contract, options)
        report["test_skipped_files"] = len(test_failures)
        report["test"] = evaluate_arrays(best, test_x, test_y, dataset.class_names, run_dir, "test", options.batch_size)
        if calibration is not None:
            from s3f_edge.train.calibrate import calibration_report

            report["calibration"]["test"] = calibration_report(best, calibration, test_x, test_y)
    history_path = run_dir / "history.csv"
    if history_path.exists():
        with open(history_path) as handle:
            rows = sum(1 for _ in handle) - 1
        epochs_run = rows - (run.initial_epoch if run.resume else 0)
        if run.train_seconds > 0 and epochs_run > 0:
            report["timing"]["train_images_per_second"] = round(epochs_run * len(run.fit_y) / run.train_seconds, 1)
        plot_history(history_path, run_dir / "training_curves.png")
    write_json(run_dir / "metrics.json", report)
    return run_dir
