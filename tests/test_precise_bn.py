"""Precise BatchNorm: population statistics, dropout off, exact pooling; the one-off command."""
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import original_layout_files

from s3f_edge.cli import main
from s3f_edge.errors import InputError
from s3f_edge.model import load_model
from s3f_edge.model.metadata import read_metadata
from s3f_edge.train.precise_bn import input_moments, recompute_batchnorm_statistics, sample_indices


def dense_model(dropout: float = 0.5) -> keras.Model:
    """Input(3) -> Dropout -> BN -> Dense(4) -> BN: the second BN's inputs depend on the first's batch moments."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    x = keras.layers.Dropout(dropout, name="drop")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Dense(4, name="dense")(x)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="bn2")(x))


def known_input(rng, count: int = 101) -> np.ndarray:
    # Channels with different means and spreads, far from BatchNorm's initial (0, 1).
    return (rng.normal(size=(count, 3)) * [1.0, 4.0, 0.25] + [3.0, -2.0, 10.0]).astype(np.float32)


def expected_moments(model: keras.Model, x: np.ndarray, batch_size: int):
    """numpy: bn1 normalises each batch with its own moments, dense follows, population moments of both inputs."""
    bn1 = model.get_layer("bn1")
    kernel, bias = (w.numpy().astype(np.float64) for w in model.get_layer("dense").weights)
    dense_inputs = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].astype(np.float64)
        normalised = (batch - batch.mean(0)) / np.sqrt(batch.var(0) + bn1.epsilon)
        dense_inputs.append(normalised * bn1.gamma.numpy() + bn1.beta.numpy())
    second = np.concatenate(dense_inputs) @ kernel + bias
    return [(x.astype(np.float64).mean(0), x.astype(np.float64).var(0)), (second.mean(0), second.var(0))]


def test_statistics_are_the_population_moments_with_dropout_off(rng):
    model, x = dense_model(), known_input(rng)
    before = model.get_layer("drop").rate
    assert recompute_batchnorm_statistics(model, x, sample_size=len(x), batch_size=7) == 2  # uneven last batch
    for name, (mean, variance) in zip(("bn1", "bn2"), expected_moments(model, x, 7)):
        layer = model.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-5)
    assert model.get_layer("drop").rate == before  # restored


def test_four_dimensional_inputs_are_reduced_over_batch_and_space(rng):
    inputs = keras.Input((6, 5, 2))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Dropout(0.3)(inputs)))
    x = (rng.normal(size=(20, 6, 5, 2)) * [2.0, 0.5] + [1.0, -4.0]).astype(np.float32)
    recompute_batchnorm_statistics(model, x, batch_size=6)
    layer = model.layers[-1]
    np.testing.assert_allclose(layer.moving_mean.numpy(), x.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.var((0, 1, 2)), rtol=1e-5)


def test_a_seeded_sample_is_used_and_frozen_layers_keep_theirs(rng):
    model, x = dense_model(), known_input(rng, 300)
    model.get_layer("bn2").trainable = False
    frozen = model.get_layer("bn2").moving_variance.numpy().copy()
    recompute_batchnorm_statistics(model, x, sample_size=50, seed=3)
    picked = x[sample_indices(len(x), 50, 3)]
    assert len(picked) == 50 and len(np.unique(picked[:, 0])) == 50
    np.testing.assert_allclose(model.get_layer("bn1").moving_mean.numpy(), picked.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.get_layer("bn2").moving_variance.numpy(), frozen)


def test_workers_pool_their_moments_exactly(rng):
    """Two workers, each with half the sample, end with the statistics of the whole sample."""
    model, x = dense_model(), known_input(rng, 64)
    other_worker = {}

    def remember(values):
        other_worker["sums"] = values
        return values

    input_moments(model, x[32:], batch_size=8, all_reduce=remember)
    pooled = input_moments(model, x[:32], batch_size=8, all_reduce=lambda values: values + other_worker["sums"])
    whole = input_moments(model, x, batch_size=8)
    for (mean, variance), (whole_mean, whole_variance) in zip(pooled, whole):
        np.testing.assert_allclose(mean, whole_mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(variance, whole_variance, rtol=1e-6)


def test_precise_bn_command_recalibrates_an_original_layout_file(tmp_path, sample_dir):
    source, _, _ = original_layout_files(tmp_path)
    assert read_metadata(source) is None
    result = CliRunner().invoke(main, ["precise-bn", str(source), str(sample_dir), "--out",
                                       str(tmp_path / "fixed.keras")])
    assert result.exit_code == 0, result.output
    assert "from 48 images of" in result.output  # train/ only: the 24 test images are not read
    before, after = load_model(source), load_model(tmp_path / "fixed.keras")
    for old, new in zip(before.weights, after.weights):
        if "moving" in old.path:
            continue
        np.testing.assert_array_equal(old.numpy(), new.numpy())
    moved = [layer.name for layer in after.layers if isinstance(layer, keras.layers.BatchNormalization)
             and not np.allclose(layer.moving_variance.numpy(), before.get_layer(layer.name).moving_variance.numpy())]
    assert len(moved) == sum(isinstance(layer, keras.layers.BatchNormalization) for layer in after.layers)
    refused = CliRunner().invoke(main, ["precise-bn", str(source), str(sample_dir), "--out", str(source)])
    assert refused.exit_code == 1 and "must differ" in refused.output


def test_the_reported_variance_change_stays_meaningful_where_a_variance_was_zero():
    from s3f_edge.train.precise_bn import relative_variance_change

    assert relative_variance_change(np.array([0.0, 1.0]), np.array([0.02, 1.0])) == pytest.approx(1.0)  # not 2e10
    assert relative_variance_change(np.array([0.0, 2.0]), np.array([0.0, 1.0])) == pytest.approx(0.5)
    assert relative_variance_change(np.zeros(3), np.zeros(3)) == 0.0


def test_precise_bn_refuses_another_datasets_classes_and_an_existing_output(tmp_path, sample_dir):
    from s3f_edge.testing import saved_model

    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1),
                        class_names=["glioma", "meningioma", "notumor", "pituitary"])
    other = tmp_path / "busi"
    for name in ("benign", "malignant", "normal"):
        (other / name).mkdir(parents=True)
        for image in sorted((sample_dir / "train" / "glioma").glob("*.jpg"))[:2]:
            (other / name / image.name).write_bytes(image.read_bytes())
    refused = CliRunner().invoke(main, ["precise-bn", str(model), str(other), "--out", str(tmp_path / "x.keras")])
    assert refused.exit_code == 1 and "not the model's classes" in refused.stderr, refused.output
    assert not (tmp_path / "x.keras").exists()
    out = tmp_path / "fixed.keras"
    first = CliRunner().invoke(main, ["precise-bn", str(model), str(sample_dir), "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, ["precise-bn", str(model), str(sample_dir), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    replaced = CliRunner().invoke(main, ["precise-bn", str(model), str(sample_dir), "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output


def test_training_records_the_choice(tmp_path, sample_dir):
    from s3f_edge.train.trainer import TrainOptions, train

    run = train(TrainOptions(data_dir=str(sample_dir), out_dir=str(tmp_path / "run"), model="baseline", epochs=1,
                             image_size=(32, 32), batch_size=8, val_fraction=0.25, workers=2, verbose=0,
                             precise_bn_images=20))
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["precise_bn"] is True and config["options"]["precise_bn_images"] == 20
    assert "population statistics over 20" in read_metadata(run / "model.keras")["batchnorm_statistics"]
    old = TrainOptions.from_saved({k: v for k, v in config["options"].items() if not k.startswith("precise_bn")})
    assert old.precise_bn is False  # a run from before the option resumes as it was trained


@pytest.mark.parametrize("bad", [0, -5])
def test_bad_sample_size_is_refused(tmp_path, sample_dir, bad):
    from s3f_edge.train.trainer import TrainOptions, train

    with pytest.raises(InputError, match="at least 1"):
        train(TrainOptions(data_dir=str(sample_dir), out_dir=str(tmp_path / "run"), precise_bn_images=bad, verbose=0))


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory, sample_dir):
    """The same short, seeded training twice: BatchNorm moving averages (the original recipe) vs precise."""
    from s3f_edge.train.trainer import TrainOptions, train

    root = tmp_path_factory.mktemp("twins")
    common = dict(data_dir=str(sample_dir), model="baseline", epochs=3, image_size=(32, 32), batch_size=8,
                  learning_rate=1e-3, val_fraction=0.25, workers=2, verbose=0)
    return {precise: train(TrainOptions(out_dir=str(root / str(precise)), precise_bn=precise, **common))
            for precise in (False, True)}


def test_population_statistics_end_the_one_class_collapse(twin_runs, sample_dir):
    """Trained on 36 real images for 3 epochs, the moving averages still sit near their initial values:
    in inference mode every test image gets the same class. With population statistics they do not."""
    from s3f_edge.data.folders import discover, load_split
    from s3f_edge.data.preprocess import Preprocessing

    test = discover(sample_dir).test
    images, labels, _ = load_split(test, Preprocessing(32, 32, 1))
    outputs = {precise: load_model(run / "last.keras").predict(images, verbose=0) for precise, run in twin_runs.items()}
    for probabilities in outputs.values():
        assert np.isfinite(probabilities).all()
    moving, precise = outputs[False], outputs[True]
    assert len(np.unique(moving.argmax(1))) == 1, "expected the moving-average model to collapse to one class"
    assert len(np.unique(precise.argmax(1))) >= 3
    assert precise.std(axis=0).mean() > 20 * moving.std(axis=0).mean()
    assert (precise.argmax(1) == labels).mean() > (moving.argmax(1) == labels).mean()
