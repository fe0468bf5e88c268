"""Real (tiny) training on the bundled brain MRI sample: protocol, resume, bad input."""
import csv
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from s3f_edge.data.folders import DatasetError, discover, stratified_split
from s3f_edge.errors import OutputExistsError
from s3f_edge.testing import interruptible_child
from s3f_edge.train.trainer import TrainOptions, train

FAST = dict(image_size=(32, 32), batch_size=8, learning_rate=1e-3, val_fraction=0.25, workers=2, verbose=0)


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, sample_dir):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    codes = run_dir.parent / "codes.csv"  # a site's own codes for the DICOM reports, kept in the model
    codes.write_text("class,code_value,scheme,meaning\nglioma,GLI,99MYSITE,Glioma\nmeningioma,MEN,99MYSITE,"
                     "Meningioma\nnotumor,NOTUMOR,99MYSITE,No tumour\npituitary,PIT,99MYSITE,"
                     "Pituitary tumour\n")
    train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=6, class_codes=str(codes), **FAST))
    return run_dir


def test_the_class_codes_given_to_train_are_in_the_model(trained_run, sample_dir, tmp_path):
    from s3f_edge.errors import InputError
    from s3f_edge.model.metadata import read_metadata

    codes = read_metadata(trained_run / "model.keras")["class_codes"]
    assert codes["glioma"] == ["GLI", "99MYSITE", "Glioma"] and len(codes) == 4
    bad = tmp_path / "bad.json"
    bad.write_text('{"glioma": ["1", "SCT", "Glioma"]}')
    with pytest.raises(InputError, match="no code for meningioma"):  # before any image is decoded
        train(TrainOptions(data_dir=str(sample_dir), out_dir=str(tmp_path / "run"), epochs=1, class_codes=str(bad),
                           **FAST))
    assert not (tmp_path / "run").exists()


def test_short_training_lowers_the_loss(trained_run):
    rows = history(trained_run)
    assert len(rows) == 6
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[0]["learning_rate_used"]) == pytest.approx(1e-3)  # fit() calls RunState.on_epoch_begin
    assert all(float(r["learning_rate_used"]) > 0 for r in rows)


def test_run_directory_is_complete(trained_run):
    for name in ("model.keras", "last.keras", "config.json", "history.csv", "metrics.json", "skipped.csv",
                 "test_confusion_matrix.png", "test_roc.png", "training_curves.png"):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test"]["count"] == 24 and metrics["validation"]["count"] == 12
    for key in ("accuracy", "f1_macro", "f1_weighted", "cohen_kappa", "mcc", "roc_auc_macro", "roc_auc_weighted"):
        assert metrics["test"][key] is not None, key
    assert set(metrics["test"]["per_class"]) == {"glioma", "meningioma", "notumor", "pituitary"}
    config = json.loads((trained_run / "config.json").read_text())
    assert config["options"]["seed"] == 0 and len(config["file_list_sha256"]) == 64
    assert config["counts"]["train"] == {"glioma": 9, "meningioma": 9, "notumor": 9, "pituitary": 9}
    assert "tensorflow" in config["versions"]


def test_saved_model_carries_classes_and_contract(trained_run):
    from s3f_edge.model.metadata import read_metadata

    metadata = read_metadata(trained_run / "model.keras")
    assert metadata["class_names"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert metadata["preprocessing"]["height"] == 32 and metadata["protocol"] == "clean"


def test_evaluate_reproduces_the_training_report(trained_run, sample_dir, tmp_path):
    from s3f_edge.train.evaluate import evaluate_folder

    report = evaluate_folder(trained_run / "model.keras", sample_dir / "test", tmp_path)
    expected = json.loads((trained_run / "metrics.json").read_text())["test"]
    assert report["metrics"]["accuracy"] == pytest.approx(expected["accuracy"])
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("glioma/Te-gl_0051.jpg\nTe-me_0139.jpg\n")
    names = {p.name for p in (sample_dir / "test").rglob("*.jpg")}
    assert {"Te-gl_0051.jpg", "Te-me_0139.jpg"} <= names
    again = evaluate_folder(trained_run / "model.keras", sample_dir / "test", tmp_path, exclude=exclude, overwrite=True)
    assert again["metrics"]["count"] == 22


def test_evaluate_scores_the_exported_onnx_like_the_keras_model(trained_run, sample_dir, tmp_path):
    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.train.evaluate import evaluate_folder

    onnx_path = export_model(trained_run / "model.keras", ExportOptions(out_dir=tmp_path / "export")).onnx_path
    keras_report = evaluate_folder(trained_run / "model.keras", sample_dir / "test", tmp_path / "keras")
    onnx_report = evaluate_folder(onnx_path, sample_dir / "test", tmp_path / "onnx")
    assert onnx_report["backend"].endswith("ExecutionProvider") and keras_report["backend"].startswith("tensorflow")
    assert onnx_report["metrics"]["confusion_matrix"] == keras_report["metrics"]["confusion_matrix"]
    assert onnx_report["metrics"]["roc_auc_macro"] == pytest.approx(keras_report["metrics"]["roc_auc_macro"], abs=1e-6)


def test_validation_split_is_stratified_seeded_and_disjoint_from_test(sample_dir):
    dataset = discover(sample_dir)
    fit, held_out = stratified_split(dataset.train, 0.25, seed=3)
    assert held_out.counts(dataset.class_names) == {name: 3 for name in dataset.class_names}
    assert not set(fit.paths) & set(held_out.paths)
    assert not set(held_out.paths) & set(dataset.test.paths)
    again, _ = stratified_split(dataset.train, 0.25, seed=3)
    assert again.paths == fit.paths


def test_resume_continues_where_it_stopped(tmp_path, sample_dir):
    run_dir = tmp_path / "run"
    options = dict(data_dir=str(sample_dir), out_dir=str(run_dir), patience=50, **FAST)
    train(TrainOptions(epochs=2, **options))
    # Simulate a kill after epoch 2: the history row of a third epoch was written, its checkpoint was not.
    with open(run_dir / "history.csv", "a") as handle:
        handle.write("2,9,9,9,9,9,0,0.001\n")
    state_before = json.loads((run_dir / "state.json").read_text())
    train(TrainOptions(epochs=4, **options), resume=True)
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[2]["loss"]) != 9.0
    assert all(float(r["learning_rate_used"]) > 0 for r in rows)  # the resumed epochs log their rate too
    assert json.loads((run_dir / "state.json").read_text())["epochs_done"] == 4
    assert state_before["epochs_done"] == 2


def test_paper_protocol_says_so(tmp_path, sample_dir):
    run_dir = tmp_path / "paper"
    train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=1, paper_protocol=True, **FAST))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["protocol"].startswith("PAPER PROTOCOL")
    assert "test (paper protocol)" in metrics and "test" not in metrics
    assert "PAPER PROTOCOL" in json.loads((run_dir / "config.json").read_text())["protocol"]


def test_existing_run_is_not_overwritten(trained_run, sample_dir):
    with pytest.raises(OutputExistsError, match="--resume .* --overwrite"):
        train(TrainOptions(data_dir=str(sample_dir), out_dir=str(trained_run), epochs=1, **FAST))


def test_overwrite_replaces_an_earlier_run_and_only_its_files(tmp_path, sample_dir):
    run_dir = tmp_path / "run"
    train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=2, patience=50, **FAST))
    (run_dir / "notes.txt").write_text("the user's own file")
    train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=1, **FAST), overwrite=True)
    assert len(history(run_dir)) == 1  # a fresh run, not rows of two
    assert (run_dir / "notes.txt").read_text() == "the user's own file"


def test_a_run_directory_never_holds_a_new_model_beside_an_old_models_outputs(trained_run, sample_dir, tmp_path):
    from s3f_edge.train.evaluate import evaluate_folder

    with pytest.raises(OutputExistsError, match="training run's directory"):  # its metrics.json is train's
        evaluate_folder(trained_run / "model.keras", sample_dir / "test", trained_run, overwrite=True)
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "export").mkdir()
    (run_dir / "export" / "model.onnx").write_bytes(b"the earlier model's export")
    with pytest.raises(OutputExistsError, match="made from its earlier model \\(export\\)"):
        train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=1, **FAST), overwrite=True)
    assert (run_dir / "export" / "model.onnx").exists() and (run_dir / "model.keras").exists()


def cli_train(*args: str):
    from click.testing import CliRunner

    from s3f_edge.cli import main

    return CliRunner().invoke(main, ["train", *args, "--quiet"])


def test_resume_continues_a_copied_run_where_it_is_from_any_working_folder(tmp_path, sample_dir, monkeypatch):
    original = tmp_path / "runs" / "tiny"
    monkeypatch.chdir(tmp_path)
    first = cli_train(str(sample_dir), "--out", "runs/tiny", "--image-size", "32", "--batch-size", "8", "--lr", "1e-3",
                      "--val-fraction", "0.25", "--epochs", "1", "--patience", "50")
    assert first.exit_code == 0, first.output
    shutil.copytree(original, tmp_path / "runs" / "tiny2")
    before = (original / "history.csv").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # config.json holds paths relative to tmp_path: resume must not follow them
    resumed = cli_train(str(sample_dir), "--resume", "../runs/tiny2", "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert [int(r["epoch"]) for r in history(tmp_path / "runs" / "tiny2")] == [0, 1]
    assert (original / "history.csv").read_bytes() == before, "resuming the copy wrote into the original"
    config = json.loads((tmp_path / "runs" / "tiny2" / "config.json").read_text())
    assert config["options"]["out_dir"] == "../runs/tiny2"


def test_an_empty_or_unusable_dataset_leaves_no_run_directory(tmp_path, sample_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="one sub-folder of images per class"):
        train(TrainOptions(data_dir=str(tmp_path / "empty"), out_dir=str(tmp_path / "run"), epochs=1, **FAST))
    tiny = copy_sample(sample_dir, tmp_path / "tiny", per_class=3)
    with pytest.raises(DatasetError, match="--val-fraction between 0.26 and 0.66"):
        train(TrainOptions(data_dir=str(tiny), out_dir=str(tmp_path / "run"), epochs=1,
                           **{**FAST, "val_fraction": 0.15}))
    assert not (tmp_path / "run").exists()


def test_a_tiny_dataset_gets_a_split_it_can_use_or_one_line_saying_which(sample_dir, tmp_path):
    dataset = discover(copy_sample(sample_dir, tmp_path / "tiny", per_class=3))  # 12 images, 4 classes
    with pytest.raises(DatasetError, match="holds 2 and leaves 10"):
        stratified_split(dataset.train, 0.15, 0)
    with pytest.raises(DatasetError, match="between 0.26 and 0.66"):
        stratified_split(dataset.train, 0.95, 0)
    for usable in (0.26, 0.66):  # both ends of the range the message gives work...
        fit, held_out = stratified_split(dataset.train, usable, 0)
        assert set(held_out.labels) == set(fit.labels) == {0, 1, 2, 3}
    for unusable in (0.25, 0.67):  # ...and the next step beyond each does not
        with pytest.raises(DatasetError):
            stratified_split(dataset.train, unusable, 0)


def test_a_log_file_gets_plain_lines_and_an_estimate_of_the_time_left(tmp_path, sample_dir):
    """`train > log`: one line per epoch without the progress bar's colour codes, and after the first epoch, how
    long the rest of the budget would take."""
    import subprocess
    import sys

    log = tmp_path / "train.log"
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "s3f_edge.cli", "train", str(sample_dir), "--out",
                               str(tmp_path / "run"), "--image-size", "32", "--batch-size", "8", "--val-fraction",
                               "0.25", "--epochs", "3", "--patience", "50"], stdout=handle, stderr=subprocess.PIPE,
                              text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert "\x1b[" not in text and "\r" not in text and "\b" not in text, repr(text[:500])
    assert text.count("Epoch ") == 3 and "32x32, up to 3 epochs" in text
    assert re.search(r"epoch 1 took \d+ s; at that pace the 2 epochs left would take about \d+ s", text), text


def copy_sample(sample_dir: Path, dest: Path, per_class: int = 4) -> Path:
    for class_dir in sorted((sample_dir / "train").iterdir()):
        if class_dir.is_dir():
            (dest / class_dir.name).mkdir(parents=True)
            for image in sorted(class_dir.glob("*.jpg"))[:per_class]:
                shutil.copy(image, dest / class_dir.name / image.name)
    return dest


def test_bad_files_are_listed_in_skipped_csv(tmp_path, sample_dir):
    data = copy_sample(sample_dir, tmp_path / "data")
    (data / "glioma" / "empty.png").write_bytes(b"")
    (data / "glioma" / "notes.txt").write_text("not an image")
    (data / "notumor" / "fake.jpg").write_text("text with an image suffix")
    good = (data / "pituitary").glob("*.jpg").__next__().read_bytes()
    (data / "pituitary" / "cut.jpg").write_bytes(good[:200])
    run_dir = tmp_path / "run"
    train(TrainOptions(data_dir=str(data), out_dir=str(run_dir), epochs=1, **{**FAST, "val_fraction": 0.4}))
    with open(run_dir / "skipped.csv") as handle:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(handle)}
    assert set(skipped) >= {"empty.png", "notes.txt", "fake.jpg"}
    assert "empty" in skipped["empty.png"] and "not an image" in skipped["notes.txt"]
    assert json.loads((run_dir / "metrics.json").read_text())["skipped_files"] == len(skipped)


def test_layouts_that_cannot_train_stop_before_training(tmp_path, sample_dir):
    single = tmp_path / "single"
    copy_sample(sample_dir, tmp_path / "tmp1")
    (single / "glioma").mkdir(parents=True)
    shutil.copy(next((tmp_path / "tmp1" / "glioma").glob("*.jpg")), single / "glioma")
    with pytest.raises(DatasetError, match="at least two classes"):
        discover(single)

    empty = copy_sample(sample_dir, tmp_path / "empty")
    (empty / "extra").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        discover(empty)

    mismatch = tmp_path / "mismatch"
    copy_sample(sample_dir, mismatch / "train")
    copy_sample(sample_dir, mismatch / "test")
    shutil.rmtree(mismatch / "test" / "glioma")
    with pytest.raises(DatasetError, match="train and test classes differ"):
        discover(mismatch)


def test_mixed_precision_keeps_spectral_filter_and_output_float32(tmp_path, sample_dir):
    import keras

    from s3f_edge.model import load_model, spectral_filters

    run_dir = tmp_path / "mixed"
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # the caller's own policy
    try:
        train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=1, mixed_precision=True, **FAST))
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16", "train changed the caller's policy"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model = load_model(run_dir / "model.keras")
    assert all(layer.compute_dtype == "float32" for layer in spectral_filters(model))
    assert model.get_layer("spatial_block1_conv1").compute_dtype == "float16"
    # Calibrated at the end: the head (now `logits`), its probabilities and the score all in float32, and the
    # score finite on float16 feature maps.
    from s3f_edge.model.calibration import is_calibrated

    assert is_calibrated(model)
    assert {model.get_layer(name).compute_dtype for name in ("logits", "probs", "ood_score")} == {"float32"}
    scores = model.predict(np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32), verbose=0)["ood_score"]
    assert np.isfinite(scores).all()


def test_resume_can_extend_the_epoch_budget(tmp_path, sample_dir):
    from click.testing import CliRunner

    from s3f_edge.cli import main

    run_dir = tmp_path / "run"
    train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=1, patience=50, **FAST))
    result = CliRunner().invoke(main, ["train", str(sample_dir), "--resume", str(run_dir), "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1]



def test_mirrored_strategy_trains(tmp_path, sample_dir):
    run_dir = tmp_path / "mirrored"
    train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=2, strategy="mirrored", **FAST))
    rows = history(run_dir)
    assert len(rows) == 2 and (run_dir / "model.keras").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["count"] == 24


def test_history_logs_the_rate_each_epoch_trained_with_not_the_next_one(tmp_path):
    import keras

    from s3f_edge.train.callbacks import RunState

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=1)
    selection = SimpleNamespace(best_score=0.5, wait=0)
    run_state = RunState(tmp_path, selection, plateau, metadata={})
    callbacks = keras.callbacks.CallbackList([plateau, run_state], model=model)  # the order train() uses
    for epoch, val_loss in enumerate([1.0, 2.0, 2.0]):  # the plateau step cuts the rate at the end of epochs 1 and 2
        callbacks.on_epoch_begin(epoch)
        callbacks.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
    rates = [float(row["learning_rate_used"]) for row in history(tmp_path)]
    assert rates == pytest.approx([1e-3, 1e-3, 2e-4])
    assert float(model.optimizer.learning_rate) == pytest.approx(4e-5)  # what epoch 3 would use


def test_resume_converts_a_history_that_logged_the_rate_after_each_plateau_step(tmp_path):
    from s3f_edge.train.callbacks import truncate_history

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,accuracy,val_loss,val_accuracy,val_selection_score,new_best,learning_rate\n"
                    "0,1,0.5,1,0.5,0.5,1,0.001\n1,1,0.5,1,0.5,0.5,0,0.0002\n2,1,0.5,1,0.5,0.5,0,0.0002\n"
                    "3,9,9,9,9,9,0,0.00004\n")  # epoch 3 ran after the last checkpoint
    truncate_history(path, epochs_done=3, initial_learning_rate=1e-3)
    rows = history(tmp_path)
    assert "learning_rate" not in rows[0]
    assert [(int(r["epoch"]), float(r["learning_rate_used"])) for r in rows] == \
        [(0, pytest.approx(1e-3)), (1, 1e-3), (2, 2e-4)]
    assert [float(r["loss"]) for r in rows] == [1, 1, 1]
    converted = path.read_text()
    truncate_history(path, epochs_done=3, initial_learning_rate=1e-3)  # a file in the new format stays as it is
    assert path.read_text() == converted


def test_ctrl_c_during_training_says_how_to_resume(tmp_path, sample_dir):
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "s3f_edge.cli", "train", str(sample_dir), "--out", str(run_dir),
                                "--image-size", "32", "--batch-size", "8", "--val-fraction", "0.25", "--epochs", "200",
                                "--patience", "200", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible_child)
    deadline = time.monotonic() + 300
    while not (run_dir / "state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"continue with: s3f-edge train {sample_dir} --resume {run_dir}" in stderr and "Traceback" not in stderr
    assert json.loads((run_dir / "state.json").read_text())["epochs_done"] >= 1
