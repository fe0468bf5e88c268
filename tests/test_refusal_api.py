"""``Predictor.refuses``: the Python API's one rule for which images a model refuses (the README shows it)."""
import numpy as np
import pytest

from s3f_edge.errors import InputError
from s3f_edge.runtime import load_predictor
from s3f_edge.runtime.predictor import default_model


def test_refuses_scores_above_the_threshold_and_nonfinite_ones():
    predictor = load_predictor(default_model())  # calibrated: it has a threshold
    threshold = predictor.ood_threshold
    assert threshold is not None and np.isfinite(threshold)
    scores = np.array([threshold - 1, threshold, threshold + 1, np.nan, np.inf])
    assert predictor.refuses(scores).tolist() == [False, False, True, True, True]  # NaN > t would be False
    assert predictor.refuses(scores, threshold=threshold + 2).tolist() == [False, False, False, True, True]
    assert predictor.refuses(scores, len(scores)).dtype == bool
    with pytest.raises(InputError, match="5 out-of-distribution scores for 4 images"):
        predictor.refuses(scores, 4)


def test_a_model_without_a_score_refuses_nothing(tmp_path):
    from s3f_edge.testing import saved_model

    predictor = load_predictor(saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1)))
    probabilities, scores = predictor.predict_scored(np.random.default_rng(0).random((3, 32, 32, 1), np.float32))
    assert scores is None and np.isfinite(probabilities).all()
    assert predictor.refuses(scores, len(probabilities)).tolist() == [False] * 3
    assert predictor.refuses(scores, 3, threshold=0.0).tolist() == [False] * 3  # no score: nothing to compare
    with pytest.raises(InputError, match="number of images"):
        predictor.refuses(scores)
