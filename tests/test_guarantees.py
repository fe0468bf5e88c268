"""The fitted guarantees of a model file (s3f_edge.runtime.calibration): conformal prediction sets checked against
MAPIE's, their coverage and its spread, refusal as a conformal test, the temperature's held-out check and the
small-sample messages."""
from __future__ import annotations

import numpy as np
import pytest

from s3f_edge.runtime.calibration import (
    FIRM_IMAGES,
    calibration_lines,
    choose_temperature,
    coverage_spread,
    fit_calibration,
    logits_from_probabilities,
    negative_log_likelihood,
    prediction_sets,
    refusal_p_values,
    scaled_probabilities,
    set_threshold,
    threshold_keeping,
)


def labelled(rng, count: int, scale: float = 3.0, classes: int = 4):
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model's outputs."""
    logits = rng.normal(size=(count, classes)) * scale
    probabilities = scaled_probabilities(logits, 1.0)
    labels = (probabilities.cumsum(axis=1) < rng.random((count, 1))).sum(axis=1)
    return logits, np.minimum(labels, classes - 1)


def test_lac_sets_are_mapies(rng):
    """The oracle: MAPIE's split-conformal LAC classifier over the same probabilities gives the same sets."""
    pytest.importorskip("mapie")
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Table(ClassifierMixin, BaseEstimator):  # a prefit classifier that returns given probabilities
        def __init__(self, probabilities=None):
            self.probabilities = probabilities

        def fit(self, features, labels):
            self.classes_, self.n_features_in_ = np.arange(self.probabilities.shape[1]), 1
            return self

        def predict_proba(self, features):
            return self.probabilities[np.asarray(features)[:, 0].astype(int)]

        def predict(self, features):
            return self.predict_proba(features).argmax(axis=1)

    logits, labels = labelled(rng, 3000)
    probabilities = scaled_probabilities(logits, 1.0)
    index = np.arange(3000)[:, None]
    for coverage in (0.8, 0.9, 0.95):
        oracle = SplitConformalClassifier(estimator=Table(probabilities).fit(None, None), confidence_level=coverage,
                                          conformity_score="lac", prefit=True)
        oracle.conformalize(index[:1000], labels[:1000])
        expected = oracle.predict_set(index[1000:])[1][:, :, 0]
        got = prediction_sets(probabilities[1000:], set_threshold(probabilities[:1000], labels[:1000], coverage))
        np.testing.assert_array_equal(got, expected)


def test_sets_cover_as_promised_and_the_spread_is_the_beta_law(rng):
    """Over many calibration samples of 94 images, the mean coverage on new images is at least the chosen one and
    its spread is the one the small-sample message quotes."""
    logits, labels = labelled(rng, 40000)
    probabilities = scaled_probabilities(logits, 1.0)
    test_p, test_y = probabilities[20000:], labels[20000:]
    coverages = []
    for start in range(0, 94 * 200, 94):
        threshold = set_threshold(probabilities[start:start + 94], labels[start:start + 94], 0.95)
        coverages.append(prediction_sets(test_p, threshold)[np.arange(len(test_y)), test_y].mean())
    assert 0.95 <= np.mean(coverages) <= 0.95 + 1 / 95 + 0.005
    assert np.std(coverages) == pytest.approx(coverage_spread(94, 0.95), rel=0.2)


def test_an_empty_set_is_possible_and_never_names_a_class():
    probabilities = np.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05]])
    sets = prediction_sets(probabilities, 0.5)  # every class with p >= 0.5
    assert sets.tolist() == [[False, False, False], [True, False, False]]


def test_too_few_images_for_the_coverage_give_every_class():
    probabilities = np.array([[0.9, 0.1]] * 5)
    assert prediction_sets(probabilities, set_threshold(probabilities, np.zeros(5, int), 0.95)).all()


def test_refusal_by_threshold_is_a_conformal_p_value_test(rng):
    """Refusing above ``threshold_keeping(reference, keep)`` is refusing p-values at or below one alpha."""
    reference = rng.normal(size=857)
    scores = rng.normal(size=5000) * 1.5
    keep = 0.99
    threshold = threshold_keeping(reference, keep)
    alpha = (len(reference) - int(np.ceil(keep * (len(reference) - 1)))) / (len(reference) + 1)
    np.testing.assert_array_equal(scores > threshold, refusal_p_values(reference, scores) <= alpha)
    assert alpha == pytest.approx(1 - keep, abs=2 / len(reference))


def test_the_temperature_is_applied_only_when_it_lowers_held_out_likelihood(rng):
    logits, labels = labelled(rng, 2000)
    temperature, note, nll = choose_temperature(logits * 3, labels)  # overconfident: T near 3, applied
    assert temperature == pytest.approx(3, rel=0.1) and note is None
    assert nll["after"] < nll["before"] and nll["held_out_after"] < nll["held_out_before"]
    kept = 0
    for seed in range(20):  # already calibrated, few images: the fitted T is noise, often not applied
        small_logits, small_labels = labelled(np.random.default_rng(seed), 40)
        temperature, note, nll = choose_temperature(small_logits, small_labels)
        if temperature == 1.0:
            kept += 1
            assert "not applied" in note and nll["held_out_after"] >= nll["held_out_before"]
        else:
            assert nll["held_out_after"] < nll["held_out_before"]
    assert kept >= 3


def test_logits_come_back_from_a_files_probabilities(rng):
    logits, labels = labelled(rng, 200)
    probabilities = scaled_probabilities(logits, 1.7).astype(np.float32)
    recovered = logits_from_probabilities(probabilities, 1.7)
    np.testing.assert_allclose(scaled_probabilities(recovered, 1.7), probabilities, atol=1e-6)
    assert negative_log_likelihood(recovered, labels, 1.7) == pytest.approx(
        negative_log_likelihood(logits, labels, 1.7), abs=1e-4)


def test_small_samples_are_said_to_be_uncertain(rng):
    logits, labels = labelled(rng, 94)
    small = fit_calibration(logits * 2, labels, rng.normal(size=94))
    text = "\n".join(calibration_lines(small))
    assert "only 94 validation images, so these figures are uncertain" in text
    assert f"+/-{100 * coverage_spread(94, 0.95):.1f} points" in text and f"about {FIRM_IMAGES}" in text
    assert f"refused there: {small['ood']['validation_refused_count']} of 94" in text
    low, high = small["ece_validation"]["after_interval"]
    assert low < high and f"(95% interval {low:.4f}-{high:.4f})" in text
    logits, labels = labelled(rng, FIRM_IMAGES + 100)
    firm = fit_calibration(logits, labels, rng.normal(size=FIRM_IMAGES + 100))
    assert not any("uncertain" in line for line in calibration_lines(firm))


def test_a_files_temperature_is_set_in_its_graph(rng, tmp_path):
    """The bundled ONNX file with another temperature written into it gives softmax(logits / new T)."""
    onnx = pytest.importorskip("onnx")
    from s3f_edge.export.guarantees import probability_node, set_temperature
    from s3f_edge.runtime import load_predictor
    from s3f_edge.runtime.predictor import default_model

    source = default_model()
    original = load_predictor(source)
    held = original.calibration["temperature"]
    model = onnx.load(source)
    set_temperature(model, 3.0, held)
    onnx.save(model, tmp_path / "model.onnx")
    initializer, reciprocal = probability_node(model)
    value = float(onnx.numpy_helper.to_array(initializer).reshape(-1)[0])
    assert (1 / value if reciprocal else value) == pytest.approx(3.0)
    images = rng.random((6, *original.contract.input_shape), dtype=np.float32)
    before = original.predict_scored(images)[0]
    after = load_predictor(tmp_path / "model.onnx").predict_scored(images)[0]
    np.testing.assert_allclose(after, scaled_probabilities(logits_from_probabilities(before, held), 3.0), atol=1e-5)
    with pytest.raises(Exception, match="not the model's"):
        set_temperature(model, 2.0, held)  # the graph now holds 3.0, not the temperature it is said to hold


def test_a_graph_whose_temperature_was_folded_away_gets_one(rng):
    """A model calibrated at T = 1 exports with no scalar before its Softmax (the converter folds x * 1 away):
    setting another temperature inserts the multiplication."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from s3f_edge.export.guarantees import probability_node, set_temperature

    weights = rng.normal(size=(5, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["image", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"])],
        "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 3])], [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert probability_node(model) is None
    with pytest.raises(Exception, match="no temperature before its probs, but the model's is 2.0000"):
        set_temperature(model, 3.0, 2.0)
    set_temperature(model, 2.5, 1.0)
    onnx.checker.check_model(model, full_check=True)
    initializer, reciprocal = probability_node(model)
    assert reciprocal and float(numpy_helper.to_array(initializer)) == pytest.approx(1 / 2.5)
    images = rng.normal(size=(4, 5)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["probs"], {"image": images})[0],
                               scaled_probabilities(images @ weights, 2.5), atol=1e-6)
