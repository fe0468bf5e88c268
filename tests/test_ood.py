"""Out-of-distribution refusal and calibrated probabilities: the scores against numpy references, the layer
against the scores, and a model that refuses another kind of image end to end (train, infer, export, resume)."""
import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from s3f_edge.cli import main
from s3f_edge.errors import InputError
from s3f_edge.train.calibrate import DATA_CHECK_NOTES
from s3f_edge.train.ood import block_scores, fit_blocks, fit_score, score, threshold_keeping


@pytest.fixture
def features(rng):
    """Three classes of 40-d features with different means and a shared, correlated covariance."""
    mixing = rng.normal(size=(40, 40)) / 6
    labels = np.repeat([0, 1, 2], 60)
    means = rng.normal(scale=3, size=(3, 40))
    return means[labels] + rng.normal(size=(180, 40)) @ mixing, labels


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean_under_the_shared_covariance(features, rng):
    from sklearn.covariance import LedoitWolf

    x, labels = features
    fitted = fit_score("mahalanobis", x, labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in range(3)])
    covariance = LedoitWolf(assume_centered=True).fit(x - means[labels]).covariance_
    queries = rng.normal(scale=3, size=(7, 40))
    expected = np.min([np.einsum("nd,de,ne->n", queries - m, np.linalg.inv(covariance), queries - m) for m in means],
                      axis=0)
    got = score(fitted, queries)
    assert np.isfinite(got).all() and np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_energy_msp_and_knn_match_their_definitions(features, rng):
    from scipy.special import logsumexp, softmax

    x, labels = features
    logits = rng.normal(size=(7, 3)) * 3
    queries = rng.normal(scale=3, size=(7, 40))
    np.testing.assert_allclose(score(fit_score("energy", x, labels), queries, logits), -logsumexp(logits, axis=1))
    np.testing.assert_allclose(score(fit_score("msp", x, labels), queries, logits), -softmax(logits, axis=1).max(1))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    tenth = -np.sort(-cosine, axis=1)[:, 9]
    np.testing.assert_allclose(score(fit_score("knn", x, labels), queries), 1 - tenth, rtol=1e-9)


def test_the_threshold_keeps_the_share_asked_for():
    scores = np.arange(1000, dtype=float)
    threshold = threshold_keeping(scores, 0.99)
    assert (scores <= threshold).mean() == pytest.approx(0.99, abs=0.002)
    with pytest.raises(InputError, match="finite"):
        threshold_keeping(np.array([1.0, np.nan]))


@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_the_layer_computes_the_numpy_score(features, rng, pooling):
    from s3f_edge.model.ood_score import OutOfDistributionScore

    x, labels = features
    # a feature map whose mean and spread depend on the class, and a vector
    maps = [rng.random((180, 5, 5, 8)) * (1 + labels[:, None, None, None]) + labels[:, None, None, None] * 0.3, x]
    statistics = fit_blocks(maps, labels, [m[:60] for m in maps], pooling)
    inputs = [keras.Input((5, 5, 8)), keras.Input((40,))]
    layer = OutOfDistributionScore([8, 40], 3, pooling)
    model = keras.Model(inputs, layer(inputs))
    layer.set_statistics(statistics)
    queries = [rng.random((9, 5, 5, 8)) * 2, rng.normal(scale=4, size=(9, 40))]
    got = model.predict([q.astype(np.float32) for q in queries], verbose=0)
    expected = block_scores(statistics, queries, pooling)
    assert np.isfinite(got).all() and np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_ece(rng):
    from s3f_edge.train.calibrate import fit_temperature, scaled_probabilities
    from s3f_edge.train.metrics import expected_calibration_error

    true_logits = rng.normal(size=(4000, 4)) * 2
    probabilities = scaled_probabilities(true_logits, 1.0)
    labels = np.array([rng.choice(4, p=p) for p in probabilities])  # labels drawn from calibrated probabilities
    overconfident = true_logits * 2.5  # what a model with temperature 2.5 too low would output
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    before = expected_calibration_error(labels, scaled_probabilities(overconfident, 1.0))
    after = expected_calibration_error(labels, scaled_probabilities(overconfident, temperature))
    assert after < before / 3
    assert (scaled_probabilities(overconfident, temperature).argmax(1) == overconfident.argmax(1)).all()


def test_expected_calibration_error_of_known_bins():
    from s3f_edge.train.metrics import expected_calibration_error

    # 10 images at confidence 0.9, 8 right: |0.8 - 0.9|; 10 at 0.6, 6 right: 0; weighted equally.
    probabilities = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.05)


def other_kinds_of_image(folder, count: int = 12):
    """Images no brain MRI model should accept: noise, colour bars, a page of text, gradients."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for index in range(count):
        kind = index % 4
        if kind == 0:
            image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        elif kind == 1:
            image = np.repeat(np.repeat(rng.integers(0, 256, (1, 8, 3), dtype=np.uint8), 96, 0), 12, 1)
        elif kind == 2:
            image = np.full((96, 96, 3), 245, np.uint8)
            for line in range(6):
                cv2.putText(image, "lorem ipsum", (2, 14 + 15 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (20, 20, 20), 1)
        else:
            image = np.tile(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], (96, 1, 3))
        cv2.imwrite(str(folder / f"other_{index:02d}.png"), image)
    return folder


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory, sample_dir):
    from s3f_edge.train.trainer import TrainOptions, train

    run_dir = tmp_path_factory.mktemp("ood") / "run"
    train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=8, image_size=(32, 32), batch_size=8,
                       learning_rate=1e-3, val_fraction=0.25, workers=2, verbose=0))
    return run_dir


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_calibrates_and_records_it(calibrated_run):
    from s3f_edge.model import load_model
    from s3f_edge.model.calibration import is_calibrated
    from s3f_edge.model.metadata import read_metadata

    assert is_calibrated(load_model(calibrated_run / "model.keras"))
    calibration = read_metadata(calibrated_run / "model.keras")["calibration"]
    metrics = json.loads((calibrated_run / "metrics.json").read_text())
    assert metrics["calibration"]["ood"]["threshold"] == calibration["ood"]["threshold"]
    assert calibration["temperature"] > 0 and calibration["fitted_on"]["validation_images"] == 12
    # at most the 6 of 24 test images that the model may refuse of its own kind (the test below)
    assert 0 <= metrics["calibration"]["test"]["refused"] <= 0.25 and metrics["test"]["ece"] is not None


def test_a_model_refuses_another_kind_of_image_and_accepts_its_own(calibrated_run, sample_dir, tmp_path):
    from s3f_edge.model.metadata import read_metadata

    folder = tmp_path / "inputs"
    other_kinds_of_image(folder / "other")
    for image in sorted((sample_dir / "test").rglob("*.jpg")):
        (folder / "mri").mkdir(parents=True, exist_ok=True)
        (folder / "mri" / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(main, ["infer", str(folder), "--recursive", "--model",
                                       str(calibrated_run / "model.keras"), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output  # refusing is an answer, not a failure
    found = rows(out)
    other = [r for r in found if Path(r["path"]).parent.name == "other"]
    mri = [r for r in found if Path(r["path"]).parent.name == "mri"]
    assert all(r["status"] == "refused" and r["predicted_class"] == "" and float(r["ood_score"]) > 0 for r in other)
    assert all(r["prob_glioma"] != "" for r in other)  # kept for audit
    assert sum(r["status"] == "ok" for r in mri) >= 18, [r["ood_score"] for r in mri]
    # every ok row has its prediction set, by the model's own threshold: every class with p >= 1 - threshold
    sets = read_metadata(calibrated_run / "model.keras")["calibration"]["sets"]
    names = [key[len("prob_"):] for key in found[0] if key.startswith("prob_")]
    for row in found:
        if row["status"] != "ok":
            assert row["answer_set"] == row["set_size"] == ""
            continue
        members = row["answer_set"].split("|") if row["answer_set"] else []
        assert int(row["set_size"]) == len(members) and members == [
            name for name in names if float(row[f"prob_{name}"]) >= 1 - sets["threshold"] - 1e-6]
        assert not members or row["predicted_class"] in members
    refused = sum(r["status"] == "refused" for r in found)
    assert f"{refused} refused" in result.output and re.search(rf"\(refused\)\s+{refused}\n", result.output)
    accepted = CliRunner().invoke(main, ["infer", str(folder), "--recursive", "--model",
                                         str(calibrated_run / "model.keras"), "--out", str(tmp_path / "a.csv"),
                                         "--quiet", "--accept-ood"])
    assert accepted.exit_code == 0 and all(r["status"] == "ok" for r in rows(tmp_path / "a.csv"))


def test_a_refused_row_round_trips_through_resume(calibrated_run, tmp_path):
    from s3f_edge.runtime import infer_folder, load_predictor

    folder = other_kinds_of_image(tmp_path / "other", count=8)
    predictor = load_predictor(calibrated_run / "model.keras")
    output = tmp_path / "r.csv"
    infer_folder(folder, predictor, output, progress=False)
    before = rows(output)
    assert {r["status"] for r in before} == {"refused"}
    (folder / "other_99.png").write_bytes((folder / "other_00.png").read_bytes())  # one new file
    summary = infer_folder(folder, predictor, output, resume=True, progress=False)
    assert summary.skipped_as_done == 8 and summary.refused == 1
    after = rows(output)
    assert [r for r in after if r["path"] != str(folder / "other_99.png")] == before  # the earlier rows, unchanged
    assert len(after) == 9 and after[-1]["status"] == "refused"


def test_the_exported_model_gives_kerass_score_and_triton_serves_it(calibrated_run, sample_dir, tmp_path):
    import onnxruntime as ort

    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.export.triton import validate_config
    from s3f_edge.runtime import load_predictor

    result = export_model(calibrated_run / "model.keras",
                          ExportOptions(out_dir=tmp_path / "x", triton_repo=tmp_path / "t"))
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    assert sorted(o.name for o in session.get_outputs()) == ["ood_score", "probs"]
    images = np.stack([cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (32, 32), interpolation=cv2.INTER_AREA)
                       for p in sorted((sample_dir / "test").rglob("*.jpg"))])[..., None].astype(np.float32) / 255
    onnx_scores = session.run(["ood_score"], {"image": images})[0]
    keras_scores = load_predictor(calibrated_run / "model.keras").predict_scored(images)[1]
    assert np.isfinite(onnx_scores).all() and np.isfinite(keras_scores).all()
    assert np.ptp(keras_scores) > 0.1  # the score depends on the image
    np.testing.assert_allclose(onnx_scores, keras_scores, rtol=1e-3, atol=1e-3)
    parity = result.parity["fp32"]
    assert all(p.score_max_rel_diff is not None and p.score_max_rel_diff <= 1e-3 for p in parity)
    config = (tmp_path / "t" / "s3f_net" / "config.pbtxt").read_text()
    assert 'name: "ood_score"' in config
    validate_config(config)
    metadata = json.loads((tmp_path / "x" / "model.json").read_text())
    assert metadata["output_names"] == ["probs", "ood_score"] and metadata["calibration"]["ood"]["threshold"]


def test_calibrate_fits_a_model_trained_without_it(sample_dir, tmp_path):
    from s3f_edge.model import load_model
    from s3f_edge.model.calibration import is_calibrated, uncalibrated
    from s3f_edge.model.metadata import read_metadata
    from s3f_edge.train.trainer import TrainOptions, train

    run = train(TrainOptions(data_dir=str(sample_dir), out_dir=str(tmp_path / "run"), epochs=2, image_size=(32, 32),
                             batch_size=8, val_fraction=0.25, workers=2, verbose=0, calibrate=False))
    assert not is_calibrated(load_model(run / "model.keras"))
    out = tmp_path / "calibrated.keras"
    result = CliRunner().invoke(main, ["calibrate", str(run / "model.keras"), str(sample_dir), "--out", str(out),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    model = load_model(out)
    assert is_calibrated(model)
    metadata = read_metadata(out)
    calibration = metadata["calibration"]
    assert f"temperature {calibration['temperature']:.3f}, chosen by log-likelihood" in result.output  # as saved
    assert f"at 95% coverage a set holds every class with probability >= {1 - calibration['sets']['threshold']:.3f}" \
        in result.output
    assert f"refused there: {calibration['ood']['validation_refused_count']} of " in result.output
    assert "note: only" in result.output and "validation images, so these figures are uncertain" in result.output
    assert metadata["calibration"]["fitted_on"]["val_fraction"] == 0.25  # the split the run recorded
    before = load_model(run / "model.keras")
    x = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(uncalibrated(model).predict(x, verbose=0), before.predict(x, verbose=0), atol=1e-6)
    again = CliRunner().invoke(main, ["calibrate", str(run / "model.keras"), str(sample_dir), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.stderr


def test_evaluate_measures_refusal_on_other_folders(calibrated_run, sample_dir, tmp_path):
    other = other_kinds_of_image(tmp_path / "other")
    result = CliRunner().invoke(main, ["evaluate", str(calibrated_run / "model.keras"), str(sample_dir / "test"),
                                       "--ood", str(other), "--out", str(tmp_path / "e"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    folder = report["ood"]["folders"][str(other)]
    assert folder["images"] == 12 and folder["refused"] >= 0.9 and folder["auroc"] >= 0.9
    assert 0 <= report["ood"]["refused"] <= 0.25 and report["metrics"]["ece"] is not None  # its own kind: few
    assert (tmp_path / "e" / "evaluate_reliability.png").stat().st_size > 1000


def test_a_model_without_a_score_says_once_that_it_cannot_refuse(sample_dir, tmp_path):
    from s3f_edge.testing import saved_model

    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1),
                        class_names=["glioma", "meningioma", "notumor", "pituitary"])
    result = CliRunner().invoke(main, ["infer", str(sample_dir / "test" / "glioma"), "--model", str(model),
                                       "--out", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("cannot refuse") == 1
    assert {r["status"] for r in rows(tmp_path / "r.csv")} == {"ok"} and rows(tmp_path / "r.csv")[0]["ood_score"] == ""


def test_precise_bn_of_a_calibrated_model_removes_the_stale_calibration(calibrated_run, sample_dir, tmp_path):
    from s3f_edge.model import load_model
    from s3f_edge.model.calibration import is_calibrated
    from s3f_edge.model.metadata import read_metadata

    out = tmp_path / "m.keras"
    result = CliRunner().invoke(main, ["precise-bn", str(calibrated_run / "model.keras"), str(sample_dir), "--out",
                                       str(out)])
    assert result.exit_code == 0, result.output
    assert "s3f-edge calibrate" in result.output
    assert not is_calibrated(load_model(out)) and "calibration" not in read_metadata(out)


def test_a_calibrated_model_loads_in_a_fresh_process(calibrated_run, sample_dir, tmp_path):
    """Its layers must be registered by loading alone (a test process has imported them already)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "s3f_edge.cli", "infer", str(sample_dir / "test" / "glioma"),
                           "--model", str(calibrated_run / "model.keras"), "--out", str(tmp_path / "r.csv"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert all(r["ood_score"] != "" for r in rows(tmp_path / "r.csv"))


def test_a_single_sigmoid_unit_is_calibrated_too(sample_dir, tmp_path):
    """The chest preset's head is one sigmoid unit: its temperature divides the one logit, and the score's class
    statistics cover both classes."""
    from s3f_edge.data.files import image_files
    from s3f_edge.data.preprocess import Preprocessing, load_image
    from s3f_edge.model import load_model
    from s3f_edge.model.calibration import LOGITS, uncalibrated
    from s3f_edge.testing import saved_model
    from s3f_edge.train.calibrate import calibrate_model

    path = saved_model(tmp_path / "chest.keras", "chest-xray", (48, 64, 1), class_names=["normal", "pneumonia"])
    model = load_model(path)
    assert model.output_shape == (None, 1)
    contract = Preprocessing(height=48, width=64, channels=1)
    images = np.stack([load_image(p, contract) for p in image_files(sample_dir)])
    labels = np.arange(len(images)) % 2
    calibrated, calibration = calibrate_model(model, images[:40], labels[:40], images[40:], labels[40:])
    outputs = calibrated.predict(images[:6], verbose=0)
    logits = keras.Model(calibrated.inputs, calibrated.get_layer(LOGITS).output).predict(images[:6], verbose=0)
    expected = 1 / (1 + np.exp(-logits / calibration["temperature"]))
    assert outputs["probs"].shape == (6, 1) and np.isfinite(outputs["ood_score"]).all()
    np.testing.assert_allclose(outputs["probs"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(uncalibrated(calibrated).predict(images[:6], verbose=0),
                               model.predict(images[:6], verbose=0), atol=1e-6)


def test_parity_fails_when_an_exported_score_drifts_or_flips_decisions(rng):
    from s3f_edge.runtime.parity import compare_outputs, parity_failures

    probabilities = rng.dirichlet(np.ones(4), size=20)
    scores = rng.normal(size=20) * 2
    reference = {"probs": probabilities, "ood_score": scores}
    same = compare_outputs(reference, {"probs": probabilities, "ood_score": scores + 1e-5}, "real images",
                           threshold=1.0)
    assert parity_failures([same], "fp32") == [] and same.score_decision_agreement == 1.0
    drifted = compare_outputs(reference, {"probs": probabilities, "ood_score": scores + 0.01}, "real images",
                              threshold=1.0)
    assert any("ood_score max relative difference" in f for f in parity_failures([drifted], "fp32"))
    far = np.r_[np.full(10, -5.0), np.full(10, 8.0)]  # well below and well above the threshold 1.0
    flipped = far.copy()
    flipped[[0, 10]] = [8.0, -5.0]  # two decisions flip
    decisions = compare_outputs({"probs": probabilities, "ood_score": far},
                                {"probs": probabilities, "ood_score": flipped}, "random", threshold=1.0)
    assert decisions.score_decision_agreement == pytest.approx(0.9)
    assert any("same refusal decision on 90.0%" in f for f in parity_failures([decisions], "int8"))
    near = np.r_[np.full(10, 0.5), np.full(10, 1.6)]  # within SCORE_NEAR_THRESHOLD of it: flips are forgiven
    forgiven = compare_outputs({"probs": probabilities, "ood_score": near},
                               {"probs": probabilities, "ood_score": near[::-1]}, "random", threshold=1.0)
    assert forgiven.score_decision_agreement == 1.0 and forgiven.score_near_threshold == 20
    assert parity_failures([forgiven], "int8") == []
    broken = compare_outputs(reference, {"probs": probabilities, "ood_score": np.full(20, np.nan)}, "random",
                             threshold=1.0)
    assert any("NaN" in f for f in parity_failures([broken], "fp16"))
    with pytest.raises(InputError, match="lost the ood_score"):
        compare_outputs(reference, {"probs": probabilities}, "random")


def test_calibration_refuses_what_it_cannot_fit(tmp_path, rng):
    """A head it would change, a class without training images, and a split that cannot give a temperature."""
    from s3f_edge.model import load_model
    from s3f_edge.runtime.calibration import choose_temperature
    from s3f_edge.testing import saved_model
    from s3f_edge.train.calibrate import calibrate_model, calibration_sample

    model = load_model(saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1)))
    images = rng.random((40, 32, 32, 1), dtype=np.float32)
    with pytest.raises(InputError, match="no training image of class"):
        calibrate_model(model, images[:20], np.zeros(20, int), images[20:], np.arange(20) % 4)
    linear = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                               keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, name="probs")])
    with pytest.raises(InputError, match="needs a softmax"):
        calibrate_model(linear, images[:20], np.arange(20) % 4, images[20:], np.arange(20) % 4)
    logits = rng.normal(size=(30, 4))
    temperature, note, _ = choose_temperature(logits, logits.argmax(1))  # nothing misclassified: no evidence
    assert temperature == 1.0 and "cannot be fitted" in note
    labels = np.r_[np.zeros(10000, int), np.ones(9, int)]  # a rare class is never sampled away
    assert set(labels[calibration_sample(labels, 100, seed=3)]) == {0, 1}


def test_calibrate_uses_the_split_the_model_was_trained_with(calibrated_run, sample_dir, tmp_path):
    wrong = CliRunner().invoke(main, ["calibrate", str(calibrated_run / "model.keras"), str(sample_dir), "--out",
                                      str(tmp_path / "c.keras"), "--seed", "5"])
    assert wrong.exit_code == 1 and "--seed 5 is not the 0 the model was trained with" in wrong.stderr


@pytest.fixture
def model_of_a_subset(sample_dir, tmp_path):
    """A synthetic model recording, as train does, the files of a copy of the samples that keeps 10 of each class's
    12 training images, and the split (0.25, seed 0) it was trained with. Returns (model, that dataset)."""
    import shutil

    from s3f_edge.data.folders import discover
    from s3f_edge.model import load_model
    from s3f_edge.model.metadata import read_metadata, save_model_atomically
    from s3f_edge.testing import saved_model

    subset = tmp_path / "subset"
    shutil.copytree(sample_dir, subset)
    for class_dir in (subset / "train").iterdir():
        for image in sorted(class_dir.glob("*.jpg"))[10:]:
            image.unlink()
    dataset = discover(subset)
    path = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1), class_names=dataset.class_names)
    metadata = {**read_metadata(path), "protocol": "clean", "data_file_list_sha256": dataset.file_list_hash(),
                "validation_split": {"fraction": 0.25, "seed": 0}}
    save_model_atomically(load_model(path), path, metadata)
    return path, subset


def calibrate_command(*arguments):
    return CliRunner().invoke(main, ["calibrate", *map(str, arguments), "--quiet"])


def test_calibrate_refuses_another_dataset_than_the_models_before_any_work(model_of_a_subset, sample_dir, tmp_path):
    from s3f_edge.data.folders import discover, stratified_split
    from s3f_edge.model.metadata import read_metadata

    model, subset = model_of_a_subset
    # what the defect did: the samples' validation split holds images the model trained on
    trained = {p.name for p in stratified_split(discover(subset).train, 0.25, 0)[0].paths}
    assert trained & {p.name for p in stratified_split(discover(sample_dir).train, 0.25, 0)[1].paths}
    refused = calibrate_command(model, sample_dir, "--out", tmp_path / "c.keras")
    assert refused.exit_code == 1, refused.output
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "are not those" in refused.stderr and "--other-data" in refused.stderr
    assert not (tmp_path / "c.keras").exists()
    # its own dataset passes, with the split it records
    own = calibrate_command(model, subset, "--out", tmp_path / "own.keras")
    assert own.exit_code == 0, own.output
    fitted = read_metadata(tmp_path / "own.keras")["calibration"]["fitted_on"]
    assert fitted["data_check"] == "matched" and not any(note in own.output for note in DATA_CHECK_NOTES.values())
    assert (fitted["val_fraction"], fitted["seed"], fitted["validation_images"]) == (0.25, 0, 10)
    # and --other-data cannot relabel the model's own files
    relabelled = calibrate_command(model, subset, "--out", tmp_path / "x.keras", "--other-data")
    assert relabelled.exit_code == 1 and "very files" in relabelled.stderr


def test_calibrate_on_other_data_on_purpose_is_recorded_and_said(model_of_a_subset, sample_dir, tmp_path):
    from s3f_edge.model.metadata import read_metadata

    model, _ = model_of_a_subset
    out = tmp_path / "c.keras"
    # the model's split says nothing of other data: another one is no contradiction
    result = calibrate_command(model, sample_dir, "--out", out, "--other-data", "--val-fraction", "0.3", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "note: calibrated on other data on purpose (--other-data)" in result.output
    metadata = read_metadata(out)
    fitted = metadata["calibration"]["fitted_on"]
    assert (fitted["data_check"], fitted["val_fraction"], fitted["seed"]) == ("other-data", 0.3, 3)
    assert metadata["validation_split"] == {"fraction": 0.25, "seed": 0}  # the model's own split, kept


def test_calibrate_a_model_without_the_record_unchecked_with_a_note(sample_dir, tmp_path):
    from s3f_edge.model.metadata import read_metadata
    from s3f_edge.testing import saved_model

    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1),
                        class_names=["glioma", "meningioma", "notumor", "pituitary"])
    assert "data_file_list_sha256" not in read_metadata(model)
    unsplit = calibrate_command(model, sample_dir, "--out", tmp_path / "c.keras")
    assert unsplit.exit_code == 1 and "does not record the validation split" in unsplit.stderr
    result = calibrate_command(model, sample_dir, "--out", tmp_path / "c.keras", "--val-fraction", "0.25",
                               "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "note: the model does not record the files it was trained on" in result.output
    fitted = read_metadata(tmp_path / "c.keras")["calibration"]["fitted_on"]
    assert (fitted["data_check"], fitted["val_fraction"], fitted["seed"]) == ("unchecked", 0.25, 0)


def test_resume_refuses_rows_decided_with_another_threshold_and_an_uncalibrated_threshold(calibrated_run, tmp_path):
    from s3f_edge.runtime import infer_folder, load_predictor
    from s3f_edge.testing import saved_model

    folder = other_kinds_of_image(tmp_path / "other", count=4)
    predictor = load_predictor(calibrated_run / "model.keras")
    output = tmp_path / "r.csv"
    infer_folder(folder, predictor, output, progress=False)
    with pytest.raises(InputError, match="decided with the refusal threshold"):
        infer_folder(folder, predictor, output, resume=True, accept_ood=True, progress=False)
    plain = load_predictor(saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1)))
    with pytest.raises(InputError, match="has no out-of-distribution score"):
        infer_folder(folder, plain, tmp_path / "p.csv", ood_threshold=3.0, progress=False)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_exports_keep_the_score_and_its_decisions(calibrated_run, sample_dir, tmp_path, precision):
    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.runtime import infer_folder, load_predictor

    result = export_model(calibrated_run / "model.keras", ExportOptions(
        out_dir=tmp_path / "x", precision=precision, calib=sample_dir / "train", parity_images=sample_dir / "test",
        copy_calibration=True))  # the threshold copied: the score's own parity is what is tested here
    parity = result.parity[precision]
    assert all(p.score_decision_agreement >= 0.99 and p.nonfinite_score_candidate == 0 for p in parity), parity
    exported = load_predictor(tmp_path / "x" / f"model.{precision}.onnx")
    other = other_kinds_of_image(tmp_path / "other", count=8)
    assert infer_folder(other, exported, tmp_path / "r.csv", progress=False).refused == 8


def test_each_exported_file_is_calibrated_on_its_own_outputs(calibrated_run, sample_dir, tmp_path):
    """FP16 export with --data: the file's temperature (in its graph), threshold and sets are fitted on its own
    outputs over the model's validation images, recorded with their agreement with FP32, also in model.json and
    Triton's parameters; without --data a reduced-precision export of a calibrated model is refused."""
    import onnx

    from s3f_edge.export.guarantees import probability_node
    from s3f_edge.export.onnx_export import COPIED_CALIBRATION
    from s3f_edge.model.metadata import read_metadata
    from s3f_edge.runtime import load_predictor

    model = calibrated_run / "model.keras"
    refused = CliRunner().invoke(main, ["export", str(model), "--out", str(tmp_path / "no-data"), "--precision",
                                        "fp16"])
    assert refused.exit_code == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "give --data DATA" in refused.stderr and not (tmp_path / "no-data" / "model.onnx").exists()
    copied = CliRunner().invoke(main, ["export", str(model), "--out", str(tmp_path / "copied"), "--precision",
                                       "fp16", "--copy-calibration"])
    assert copied.exit_code == 0, copied.output + copied.stderr
    assert load_predictor(tmp_path / "copied" / "model.fp16.onnx").calibration["fitted_on"]["artefact"] == \
        COPIED_CALIBRATION
    result = CliRunner().invoke(main, ["export", str(model), "--out", str(tmp_path / "x"), "--precision", "fp16",
                                       "--data", str(sample_dir), "--triton", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output + result.stderr
    assert "Each file's own calibration, fitted on its outputs over the 12 validation images" in result.output
    keras_calibration = read_metadata(model)["calibration"]
    for name, label in (("model.onnx", "onnx fp32"), ("model.fp16.onnx", "onnx fp16")):
        predictor = load_predictor(tmp_path / "x" / name)
        calibration = predictor.calibration
        assert calibration["fitted_on"]["artefact"] == label and calibration["agreement_with_fp32"]["images"] == 12
        assert calibration["sets"]["coverage"] == 0.95 and predictor.set_rule is not None
        initializer, reciprocal = probability_node(onnx.load(tmp_path / "x" / name))
        held = float(onnx.numpy_helper.to_array(initializer).reshape(-1)[0])
        assert (1 / held if reciprocal else held) == pytest.approx(calibration["temperature"], rel=2e-3)
        assert calibration["fitted_on"]["val_fraction"] == keras_calibration["fitted_on"]["val_fraction"]
    written = json.loads((tmp_path / "x" / "model.json").read_text())
    assert set(written["calibrations"]) == {"onnx fp32", "onnx fp16"}
    assert written["calibration"] == written["calibrations"]["onnx fp16"]
    config = (tmp_path / "t" / "s3f_net" / "config.pbtxt").read_text()
    threshold = written["calibration"]["ood"]["threshold"]
    assert f'key: "s3f_edge_ood_threshold"\n  value: {{ string_value: "{threshold}" }}' in config
    other = tmp_path / "other"  # the same dataset less one training image
    shutil.copytree(sample_dir, other)
    next((other / "train").rglob("*.jpg")).unlink()
    wrong = CliRunner().invoke(main, ["export", str(model), "--out", str(tmp_path / "y"), "--data", str(other)])
    assert wrong.exit_code == 1 and "does not hold the files the model was calibrated on" in wrong.stderr


def test_agreement_limits_refuse_a_file_that_decides_otherwise(rng):
    from s3f_edge.errors import ParityError
    from s3f_edge.export.guarantees import ValidationImages, fit_file, prepare
    from s3f_edge.runtime.calibration import fit_calibration, scaled_probabilities

    logits = rng.normal(size=(400, 4)) * 4
    labels = logits.argmax(axis=1)
    labels[:40] = (labels[:40] + 1) % 4
    scores = rng.normal(size=400)
    fitted = fit_calibration(logits, labels, scores)
    keras = {**fitted, "ood": {**fitted["ood"], "keep": 0.9}, "fitted_on": {"seed": 0}}
    outputs = {"probs": scaled_probabilities(logits, keras["temperature"]), "ood_score": scores}
    validation = prepare(keras, outputs, np.zeros((400, 1)), labels)
    assert isinstance(validation, ValidationImages)
    same = fit_file(validation, "same", outputs)
    assert same["agreement_with_fp32"]["top1"] == 1.0 and same["agreement_with_fp32"]["refusal"] == 1.0
    shuffled = {"probs": outputs["probs"][:, ::-1], "ood_score": scores}  # another model's answers
    with pytest.raises(ParityError, match="top-1 classes agree with FP32 on"):
        fit_file(validation, "shuffled", shuffled)
    moved = {"probs": outputs["probs"], "ood_score": rng.normal(size=400)}  # scores unrelated to FP32's
    with pytest.raises(ParityError, match="refusal decisions agree with FP32 on"):
        fit_file(validation, "moved", moved)


def test_quantile_normalisation_puts_every_block_at_one_on_its_own_quantile(rng):
    from s3f_edge.train.ood import QUANTILE_NORMALISATION, FittedScore

    fit = [rng.normal(size=(300, 6)), rng.normal(size=(300, 4)) * 5]
    validation = [rng.normal(size=(200, 6)), rng.normal(size=(200, 4)) * 5]
    labels = np.arange(300) % 3
    for values, block in zip(fit_blocks(fit, labels, validation, normalisation="quantile"), validation):
        fitted = FittedScore("mahalanobis", whitening=values["whitening"], class_means=values["class_means"])
        standardised = (score(fitted, block) - values["location"]) / values["scale"]
        assert np.quantile(standardised, QUANTILE_NORMALISATION) == pytest.approx(1.0)
        assert np.median(standardised) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InputError, match="normalisation must be one of"):
        fit_blocks(fit, labels, validation, normalisation="rank")


def test_an_engine_gets_its_own_threshold_and_sets_in_its_sidecar(calibrated_run, sample_dir, tmp_path, monkeypatch):
    """The TensorRT path without a GPU: the engine builder and runtime replaced by ONNX Runtime over the file the
    engine would be built from, with its score moved, as a reduced-precision engine's would be. The engine keeps
    that file's temperature; its refusal threshold is fitted on its own scores and recorded in its sidecar."""
    import onnx

    import s3f_edge.export.tensorrt as tensorrt_export
    import s3f_edge.runtime.tensorrt_backend as tensorrt_backend
    import s3f_edge.runtime.tensorrt_env as tensorrt_env
    from s3f_edge.export.guarantees import probability_node
    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.runtime.onnx_backend import create_session

    built = {}

    def build_engine(onnx_file, engine_path, input_shape, options, model_metadata=None):
        built["onnx"] = onnx_file
        Path(engine_path).write_bytes(b"engine")
        tensorrt_env.sidecar_path(engine_path).write_text(json.dumps({"model_metadata": model_metadata}))
        return {}

    class Engine:  # what the engine computes: the ONNX file's outputs, every score 0.05 % higher (within parity)
        def __init__(self, engine_path):
            self.session = create_session(str(built["onnx"]), ["CPUExecutionProvider"])

        def _outputs_by_name(self, batch):
            probs, scores = self.session.run(["probs", "ood_score"], {"image": batch.astype(np.float32)})
            return {"probs": probs, "ood_score": scores * (1 + 5e-4)}

    monkeypatch.setattr(tensorrt_env, "import_tensorrt", lambda: type("trt", (), {"__version__": "10.9.0"}))
    monkeypatch.setattr(tensorrt_env, "gpu_identity", lambda: {"gpu_name": "none", "compute_capability": "0"})
    monkeypatch.setattr(tensorrt_export, "build_engine", build_engine)
    monkeypatch.setattr(tensorrt_backend, "TensorRTPredictor", Engine)
    result = export_model(calibrated_run / "model.keras", ExportOptions(out_dir=tmp_path / "x", trt=True,
                                                                        data=sample_dir))
    onnx_calibration = result.calibrations["onnx fp32"]
    engine = json.loads(tensorrt_env.sidecar_path(tmp_path / "x" / "model.fp32.engine").read_text())
    calibration = engine["model_metadata"]["calibration"]
    assert calibration["fitted_on"]["artefact"] == "tensorrt fp32"
    assert calibration["temperature"] == onnx_calibration["temperature"]  # its graph cannot be edited
    initializer, reciprocal = probability_node(onnx.load(built["onnx"]))  # the engine was built from the fitted file
    held = float(onnx.numpy_helper.to_array(initializer).reshape(-1)[0])
    assert (1 / held if reciprocal else held) == pytest.approx(calibration["temperature"], rel=2e-3)
    threshold = onnx_calibration["ood"]["threshold"]
    assert calibration["ood"]["threshold"] == pytest.approx(threshold * (1 + 5e-4), rel=1e-6) != threshold
    assert calibration["agreement_with_fp32"]["refusal"] >= 0.98
