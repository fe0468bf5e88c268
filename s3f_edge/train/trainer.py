"""`s3f-edge train`: the original training recipe (Adam 3e-4, batch 16, balanced class weights, LR plateau ×0.2,
weighted-F1 checkpoint selection) on a folder dataset, with a clean protocol."""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from s3f_edge.data.folders import FolderDataset, discover, load_split, stratified_split, write_skipped
from s3f_edge.data.preprocess import Preprocessing
from s3f_edge.errors import InputError, NonFiniteOutputError, OutputExistsError
from s3f_edge.model.class_codes import class_codes_for
from s3f_edge.model.metadata import package_versions
from s3f_edge.model.presets import get_preset
from s3f_edge.outputs import claim_outputs, ensure_writable, write_json
from s3f_edge.train.options import TrainOptions
from s3f_edge.train.run_directory import (  # noqa: F401  (RUN_FILES, is_resumable: re-exported for the CLI)
    RUN_FILES,
    derived_outputs,
    is_resumable,
    read_run_json,
    run_files,
    saved_options,
)

PAPER_PROTOCOL_WARNING = (
    "PAPER PROTOCOL: the test set was used as the validation set for checkpoint selection, early "
    "stopping and the learning-rate schedule, as in the original work. Test metrics are optimistic "
    "and are not an unbiased estimate of performance."
)


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


@dataclass(frozen=True)
class _RunPlan:
    """What a run is, settled before a file is written or a pixel decoded (``_plan_run``)."""

    options: TrainOptions  # resolved: every value the run uses
    resume: bool
    distribution: object
    write_dir: Path  # where this process writes: the run directory (chief) or a scratch one (other workers)
    run_dir: Path
    dataset: FolderDataset
    fit_split: object
    selection_split: object
    selection_name: str  # "validation", or the test split under the paper protocol
    resumed_state: dict | None  # state.json of the run being resumed: its counters
    contract: Preprocessing
    sigmoid_head: bool


@dataclass(frozen=True)
class _DecodedImages:
    """The fit and selection splits' pixels (``_load_data``), and the files that could not be read."""

    fit_x: object  # an array, or a memory map of the disk cache
    fit_y: np.ndarray
    sel_x: object
    sel_y: np.ndarray
    skipped: list
    decode_seconds: float


@dataclass(frozen=True)
class _RunRecord:
    """What ``_record_run`` wrote down: the metadata every saved model carries, and config.json."""

    metadata: dict
    config: dict


@dataclass(frozen=True)
class _Fitted:
    """What training did (``_fit``): the selection callback (its best score), and how long it took."""

    initial_epoch: int
    selection: object
    train_seconds: float
    distributed: dict | None  # the custom loop's account of this worker, under multi-worker training


def _train(options: TrainOptions, resume: bool, overwrite: bool, distribution, write_dir: Path) -> Path:
    """One run, in named steps: check and plan the run, load the data, record the run, build or resume the model,
    fit, and (on the chief) select, calibrate and report."""
    plan = _plan_run(options, resume, overwrite, distribution, write_dir)
    images = _load_data(plan)
    record = _record_run(plan, images)
    model, initial_epoch = _build_or_resume(plan)
    fitted = _fit(plan, images, record, model, initial_epoch)
    if not distribution.is_chief:
        return write_dir
    return _final_report(plan, images, record, fitted)


def _plan_run(options: TrainOptions, resume: bool, overwrite: bool, distribution, write_dir: Path) -> _RunPlan:
    """Everything that can be refused, checked before a file is written or a pixel decoded."""
    run_dir = Path(options.out_dir)
    dataset = discover(options.data_dir)
    class_codes_for(options.class_codes, dataset.class_names)  # a bad code file fails before any work
    fit_split, selection_split, selection_name = _selection_split(dataset, options)
    state = None
    if resume:
        saved_options(run_dir)  # refuses a directory that holds no resumable run
        state = read_run_json(run_dir / "state.json", "a run's state")
        previous = read_run_json(run_dir / "config.json", "a run's configuration")
        if previous.get("file_list_sha256") != dataset.file_list_hash():
            raise InputError(f"the files of {options.data_dir} differ from those {run_dir} was trained on; resume "
                             "with the same dataset, or start a new run with --out")
    elif distribution.is_chief:
        _claim_run_directory(run_dir, overwrite)
    if options.cache == "disk":
        from s3f_edge.data.cache import default_cache_dir

        ensure_writable(options.cache_dir or default_cache_dir(), "--cache-dir", folder=True)
    write_dir.mkdir(parents=True, exist_ok=True)
    preset = get_preset(options.preset)
    height, width = options.image_size
    return _RunPlan(options, resume, distribution, write_dir, run_dir, dataset, fit_split, selection_split,
                    selection_name, state,
                    contract=Preprocessing(height=height, width=width, channels=preset.input_shape[2]),
                    sigmoid_head=preset.sigmoid_head and len(dataset.class_names) == 2)


def _claim_run_directory(run_dir: Path, overwrite: bool) -> None:
    """A new run's directory: writable, and an earlier run's files refused, or with ``overwrite`` removed unless
    outputs made from its model sit beside them."""
    ensure_writable(run_dir, "--out", folder=True)
    derived = derived_outputs(run_dir)
    if derived and overwrite:
        names = ", ".join(p.name for p in derived)
        raise OutputExistsError(f"{run_dir} also holds outputs made from its earlier model ({names}); remove them "
                                "first, or choose another --out (a new model beside an old model's export would "
                                "mix two models)")
    claim_outputs(run_files(run_dir), overwrite=overwrite, instead=f"--resume {run_dir} to continue the run")


def _load_data(plan: _RunPlan) -> _DecodedImages:
    """Decode the fit and selection splits (what cannot be read is listed, never dropped silently)."""
    options, dataset = plan.options, plan.dataset
    height, width = options.image_size
    test = len(dataset.test) if dataset.test else 0
    _log(options, f"classes: {dataset.class_names}; train {len(plan.fit_split)}, {plan.selection_name} "
                  f"{len(plan.selection_split)}, test {test}; {height}x{width}, up to {options.epochs} epochs")
    if "CPU" in plan.distribution.description and height * width > 128 * 128:
        _log(options, f"no GPU: {height}x{width} trains slowly on a CPU (the time per epoch is shown after the first); "
                      "--image-size 64 or 128 trains several times faster")
    started = time.perf_counter()
    fit_x, fit_y, failures = _load(plan.fit_split, plan.contract, options, progress=bool(options.verbose))
    sel_x, sel_y, sel_failures = _load(plan.selection_split, plan.contract, options)
    decode_seconds = time.perf_counter() - started
    if len(np.unique(fit_y)) < len(dataset.class_names):
        raise InputError("after skipping unreadable files, some class has no training image left")
    return _DecodedImages(fit_x, fit_y, sel_x, sel_y, dataset.skipped + failures + sel_failures, decode_seconds)


def _record_run(plan: _RunPlan, images: _DecodedImages) -> _RunRecord:
    """The model's metadata, config.json (every option used) and skipped.csv."""
    options, dataset = plan.options, plan.dataset
    metadata = {
        "format": "s3f-edge-model", "class_names": dataset.class_names, "preprocessing": plan.contract.to_dict(),
        "preset": options.preset, "kind": options.model, "variant": options.variant, "fusion": options.fusion,
        "sigmoid_head": plan.sigmoid_head, "protocol": "paper" if options.paper_protocol else "clean",
        "batchnorm_statistics": (f"population statistics over {min(options.precise_bn_images, len(images.fit_y))} "
                                 f"training images{' (augmented)' if options.augment else ''}, dropout off "
                                 "(precise BatchNorm)")
                                if options.precise_bn else
                                "moving averages from training (original recipe)",
        "data_file_list_sha256": dataset.file_list_hash(),
        "versions": package_versions("tensorflow", "keras", "numpy", "scikit-learn"),
    }
    if options.class_codes:
        metadata["class_codes"] = class_codes_for(options.class_codes, dataset.class_names)
    if not options.paper_protocol:  # so that `s3f-edge calibrate` can carve the same validation split again
        metadata["validation_split"] = {"fraction": options.val_fraction, "seed": options.seed}
    counts = {"train": plan.fit_split.counts(dataset.class_names),
              plan.selection_name: plan.selection_split.counts(dataset.class_names),
              "test": dataset.test.counts(dataset.class_names) if dataset.test else None}
    config = {
        "options": {**asdict(options), "image_size": list(options.image_size)},
        "class_names": dataset.class_names, "counts": counts,
        "skipped": len(images.skipped), "file_list_sha256": dataset.file_list_hash(),
        "preprocessing": plan.contract.to_dict(), "versions": metadata["versions"],
        "protocol": PAPER_PROTOCOL_WARNING if options.paper_protocol else
        "clean: a stratified validation split carved from train drives selection; test is scored once at the end",
    }
    write_json(plan.write_dir / "config.json", config)
    write_skipped(plan.write_dir / "skipped.csv", images.skipped)
    if images.skipped:
        _log(options, f"skipped {len(images.skipped)} unreadable or non-image files (see "
                      f"{plan.write_dir / 'skipped.csv'})")
    return _RunRecord(metadata, config)


def _build_or_resume(plan: _RunPlan) -> tuple[object, int]:
    """(model, first epoch to run): a new compiled model, or the last checkpoint of the run being resumed (its
    history cut to match)."""
    import keras

    from s3f_edge.model import build_model, load_model
    from s3f_edge.train.callbacks import truncate_history

    options, state = plan.options, plan.resumed_state
    keras.utils.set_random_seed(options.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if options.mixed_precision else "float32")
    with plan.distribution.strategy.scope():
        if plan.resume:
            model = load_model(plan.run_dir / "last.keras", compile=True)
            truncate_history(plan.write_dir / "history.csv", state["epochs_done"], options.learning_rate)
            _log(options, f"resuming after epoch {state['epochs_done']}")
            return model, state["epochs_done"]
        model = build_model(
            options.preset, kind=options.model, input_shape=plan.contract.input_shape,
            num_classes=len(plan.dataset.class_names), variant=options.variant, fusion=options.fusion,
            sigmoid_head=plan.sigmoid_head,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(options.learning_rate),
            loss="binary_crossentropy" if plan.sigmoid_head else "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model, 0


def _callbacks(plan: _RunPlan, images: _DecodedImages, record: _RunRecord) -> tuple[list, object]:
    """(callbacks, the selection among them): selection on the validation split, the learning-rate schedule, the
    crash-safe run state, the time estimate."""
    import keras

    from s3f_edge.train.callbacks import BudgetNote, RunState, ValidationSelection
    from s3f_edge.train.precise_bn import batchnorm_refresher

    options, state = plan.options, plan.resumed_state
    selection = ValidationSelection(
        images.sel_x, images.sel_y, plan.write_dir / "model.keras", record.metadata, options.patience,
        plan.sigmoid_head, options.batch_size, best_score=state["best_score"] if state else -1.0,
        wait=state["wait"] if state else 0,
        before_scoring=batchnorm_refresher(images.fit_x, sample_size=options.precise_bn_images, seed=options.seed,
                                           augment=options.augment, distribution=plan.distribution)
        if options.precise_bn else None,
    )
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=options.lr_factor, patience=options.lr_patience, min_lr=options.min_learning_rate,
        verbose=options.verbose,
    )
    if state:
        plateau.wait, plateau.best = state["plateau"]["wait"], state["plateau"]["best"]
        plateau.cooldown_counter = state["plateau"]["cooldown_counter"]
        plateau._reset = lambda: None  # keep the restored counters when fit() starts
    callbacks = [selection, plateau, RunState(plan.write_dir, selection, plateau, record.metadata)]
    if options.verbose and plan.distribution.is_chief:
        callbacks.append(BudgetNote(options.epochs, lambda line: _log(options, line)))
    return callbacks, selection


def _fit(plan: _RunPlan, images: _DecodedImages, record: _RunRecord, model, initial_epoch: int) -> _Fitted:
    """Train the remaining epochs: Keras's fit on one device or several local ones, the custom loop across hosts."""
    from s3f_edge.train.loop import fit_multiworker
    from s3f_edge.train.pipeline import input_pipeline

    options, distribution, state = plan.options, plan.distribution, plan.resumed_state
    class_weight = None
    if options.class_weights:
        from sklearn.utils.class_weight import compute_class_weight

        weights = compute_class_weight("balanced", classes=np.arange(len(plan.dataset.class_names)), y=images.fit_y)
        class_weight = {i: float(w) for i, w in enumerate(weights)}
    callbacks, selection = _callbacks(plan, images, record)
    started = time.perf_counter()
    distributed = None
    finished = bool(state and state.get("stopped")) or initial_epoch >= options.epochs
    if not finished and distribution.custom_loop:
        distributed = fit_multiworker(
            model, distribution, images.fit_x, images.fit_y, epochs=options.epochs, initial_epoch=initial_epoch,
            batch_size=options.batch_size, seed=options.seed, augment=options.augment, class_weight=class_weight,
            sigmoid_head=plan.sigmoid_head, callbacks=callbacks, verbose=options.verbose,
        )
        print(f"worker {distribution.worker_index + 1}/{distribution.num_workers}: trained on "
              f"{distributed['examples_seen_by_this_worker']} images; weights sha256 "
              f"{distributed['weights_sha256']}", flush=True)
    elif not finished:
        model.fit(
            input_pipeline(images.fit_x, images.fit_y, options.batch_size, options.seed, options.augment),
            epochs=options.epochs, initial_epoch=initial_epoch, class_weight=class_weight, callbacks=callbacks,
            verbose=options.verbose,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
        )
    return _Fitted(initial_epoch, selection, time.perf_counter() - started, distributed)


def _calibrate(model, model_path: Path, images: _DecodedImages, dataset: FolderDataset, options: TrainOptions):
    """Fit the temperature and the out-of-distribution score on the run's own images; save the calibrated model
    over the selected one. Returns (calibrated model, calibration)."""
    from s3f_edge.model.metadata import read_metadata, save_model_atomically
    from s3f_edge.train.calibrate import DEFAULT_FIT_IMAGES, calibrate_model, calibration_sample
    from s3f_edge.train.precise_bn import Rows

    picked = calibration_sample(images.fit_y, DEFAULT_FIT_IMAGES, options.seed)
    provenance = {"data_file_list_sha256": dataset.file_list_hash(), "val_fraction": options.val_fraction,
                  "seed": options.seed}
    calibrated_model, calibration = calibrate_model(model, Rows(images.fit_x, picked), images.fit_y[picked],
                                                    images.sel_x, images.sel_y, provenance=provenance,
                                                    batch_size=options.batch_size * 2)
    save_model_atomically(calibrated_model, model_path, {**read_metadata(model_path), "calibration": calibration})
    from s3f_edge.runtime.calibration import calibration_lines

    for line in calibration_lines(calibration):
        _log(options, f"calibrated: {line}" if not line.startswith("note:") else line)
    return calibrated_model, calibration


def _final_report(plan: _RunPlan, images: _DecodedImages, record: _RunRecord, fitted: _Fitted) -> Path:
    """The selected model, calibrated; the test set touched once, here; metrics.json and the plots."""
    from s3f_edge.model import load_model
    from s3f_edge.train.evaluate import evaluate_arrays

    options, dataset, run_dir = plan.options, plan.dataset, plan.run_dir
    if not (run_dir / "model.keras").exists():
        raise NonFiniteOutputError(f"no epoch gave a model with finite outputs on the {plan.selection_name} split, "
                                   "so none was selected; lower the learning rate (--lr) and train again")
    best = load_model(run_dir / "model.keras")
    calibration = None
    if options.calibrate and not options.paper_protocol:
        from s3f_edge.train.calibrate import MIN_IMAGES

        if min(len(images.fit_y), len(images.sel_y)) >= MIN_IMAGES:
            best, calibration = _calibrate(best, run_dir / "model.keras", images, dataset, options)
        else:
            _log(options, f"not calibrated: fewer than {MIN_IMAGES} training or validation images")
    report = {
        "protocol": record.config["protocol"],
        "selection_split": plan.selection_name,
        "best_selection_score": fitted.selection.best_score,
        "timing": {"decode_seconds": round(images.decode_seconds, 2), "train_seconds": round(fitted.train_seconds, 2),
                   "train_images_per_second": None},
        "skipped_files": len(images.skipped),
        "distribution": fitted.distributed or {"strategy": plan.distribution.name,
                                               "description": plan.distribution.description},
        **({"calibration": calibration} if calibration is not None else {}),
        plan.selection_name: evaluate_arrays(best, images.sel_x, images.sel_y, dataset.class_names, run_dir,
                                             "validation", options.batch_size),
    }
    if dataset.test is not None and not options.paper_protocol:
        _score_test_set(plan, best, calibration, report)
    _report_history(plan, images, fitted, report)
    write_json(run_dir / "metrics.json", report)
    return run_dir


def _score_test_set(plan: _RunPlan, model, calibration: dict | None, report: dict) -> None:
    """The test split's metrics (and, for a calibrated model, what calibration does there) into ``report``."""
    from s3f_edge.train.evaluate import evaluate_arrays

    options, dataset = plan.options, plan.dataset
    test_x, test_y, test_failures = _load(dataset.test, plan.contract, options)
    report["test_skipped_files"] = len(test_failures)
    report["test"] = evaluate_arrays(model, test_x, test_y, dataset.class_names, plan.run_dir, "test",
                                     options.batch_size)
    if calibration is not None:
        from s3f_edge.train.calibrate import calibration_report

        report["calibration"]["test"] = calibration_report(model, calibration, test_x, test_y)


def _report_history(plan: _RunPlan, images: _DecodedImages, fitted: _Fitted, report: dict) -> None:
    """The training speed of this session's epochs into ``report``, and the training curves' plot."""
    from s3f_edge.train.metrics import plot_history

    history_path = plan.run_dir / "history.csv"
    if not history_path.exists():
        return
    with open(history_path) as handle:
        rows = sum(1 for _ in handle) - 1
    epochs_run = rows - (fitted.initial_epoch if plan.resume else 0)
    if fitted.train_seconds > 0 and epochs_run > 0:
        report["timing"]["train_images_per_second"] = round(epochs_run * len(images.fit_y) / fitted.train_seconds, 1)
    plot_history(history_path, plan.run_dir / "training_curves.png")
