"""Save/load round trips, and files in the original release's layout."""
import subprocess
import sys

import numpy as np
import pytest
from helpers import original_layout_files

from s3f_edge import BilinearFusion, SpectralFilter, build_model, load_model, set_spectral_mode
from s3f_edge.errors import InputError, MissingFileError


@pytest.mark.parametrize("kind,fusion,variant", [("s3f", "bilinear", "sn1"), ("s3f", "concat", "sn2"),
                                                 ("spectral", "concat", "sn1"), ("baseline", "concat", "sn1")])
def test_keras_round_trip_is_identical(tmp_path, rng, kind, fusion, variant):
    model = build_model(kind=kind, input_shape=(32, 40, 1), num_classes=3, fusion=fusion, variant=variant)
    x = rng.random((2, 32, 40, 1), dtype=np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_loaded_model_switches_to_matmul(tmp_path, rng):
    model = build_model("brisc2025", input_shape=(48, 48, 1))
    path = tmp_path / "m.keras"
    model.save(path)
    x = rng.random((2, 48, 48, 1), dtype=np.float32)
    matmul = load_model(path, spectral_mode="matmul")
    expected = model.predict(x, verbose=0)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(matmul.predict(x, verbose=0), expected, atol=1e-5)
    assert {layer.mode for layer in matmul.layers if hasattr(layer, "mode")} == {"matmul"}


def test_switching_the_form_takes_effect_for_predict(monkeypatch, rng):
    """Observe which form runs: each form's Python code is traced when Keras builds predict's graph, so a
    graph kept from before the switch would never trace the new form."""
    traced = {"fft": 0, "matmul": 0}
    for form in traced:
        original = getattr(SpectralFilter, f"_call_{form}")

        def counting(self, inputs, form=form, original=original):
            traced[form] += 1
            return original(self, inputs)

        monkeypatch.setattr(SpectralFilter, f"_call_{form}", counting)
    model = build_model(kind="spectral", input_shape=(32, 32, 1), num_classes=3)
    x = rng.random((2, 32, 32, 1), dtype=np.float32)
    by_fft = model.predict(x, verbose=0)
    assert traced["fft"] > 0 and traced["matmul"] == 0
    set_spectral_mode(model, "matmul")
    by_matmul = model.predict(x, verbose=0)
    assert traced["matmul"] > 0, "predict still runs the graph traced with the FFT form"
    assert np.isfinite(by_matmul).all()
    np.testing.assert_allclose(by_matmul, by_fft, atol=1e-5)
    calls = traced["fft"]
    set_spectral_mode(model, "fft")
    model.predict(x, verbose=0)
    assert traced["fft"] > calls


def test_load_model_explains_bad_paths(tmp_path):
    with pytest.raises(MissingFileError):
        load_model(tmp_path / "missing.keras")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(InputError, match="runtime"):
        load_model(onnx_file)


def test_original_release_layout_loads_and_exports_to_matmul(tmp_path):
    path, x, expected = original_layout_files(tmp_path)
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    assert any(isinstance(layer, SpectralFilter) for layer in loaded.layers)
    assert any(isinstance(layer, BilinearFusion) for layer in loaded.layers)
    set_spectral_mode(loaded, "matmul")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)


def test_fresh_process_loads_after_import(tmp_path):
    path = tmp_path / "m.keras"
    build_model("busi", input_shape=(32, 32, 1)).save(path)
    code = (f"import keras, s3f_edge; m = keras.saving.load_model({str(path)!r}); "
            "print(type(m.get_layer('spectral_filter2')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip().endswith("SpectralFilter")


def test_reloaded_original_model_saves_and_loads_again(tmp_path):
    path, x, expected = original_layout_files(tmp_path)
    resaved = tmp_path / "resaved.keras"
    load_model(path).save(resaved)
    np.testing.assert_allclose(load_model(resaved).predict(x, verbose=0), expected, atol=1e-6)


WITHOUT_TRAINING_STACK = """
import json, sys
sys.modules["keras"] = None  # what a runtime-only install (s3f-edge[cpu]) lacks: importing either fails
sys.modules["tensorflow"] = None
import s3f_edge, s3f_edge.model
from s3f_edge.errors import MissingDependencyError
outcomes = {}
for owner, name in [(s3f_edge, n) for n in s3f_edge._MODEL_API] + [(s3f_edge.model, "load_model")]:
    try:
        getattr(owner, name)
        outcomes[f"{owner.__name__}.{name}"] = "loaded"
    except MissingDependencyError as error:
        outcomes[f"{owner.__name__}.{name}"] = str(error)
print(json.dumps(outcomes))
"""


def test_the_model_api_names_the_train_extra_where_keras_is_missing():
    """On a deployment machine, ``s3f_edge.build_model`` says which extra to install instead of a raw
    ModuleNotFoundError; the plain-data presets still load."""
    import json

    done = subprocess.run([sys.executable, "-c", WITHOUT_TRAINING_STACK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcomes.pop("s3f_edge.get_preset") == "loaded"
    assert set(outcomes) == {"s3f_edge.BilinearFusion", "s3f_edge.SpectralFilter", "s3f_edge.build_model",
                             "s3f_edge.load_model", "s3f_edge.set_spectral_mode", "s3f_edge.model.load_model"}
    for name, message in outcomes.items():
        assert "s3f-edge[train" in message and name in message, (name, message)
