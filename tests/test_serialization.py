"""Save/load round trips, and files in the original release's layout."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from s3f_edge import BilinearFusion, SpectralFilter, build_model, load_model, set_spectral_mode


@pytest.mark.parametrize("kind,fusion,variant", [("s3f", "bilinear", "sn1"), ("s3f", "concat", "sn2"), ("spectral", "concat", "sn1"), ("baseline", "concat", "sn1")])
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
    np.testing.assert_allclose(matmul.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert {layer.mode for layer in matmul.layers if hasattr(layer, "mode")} == {"matmul"}
    set_spectral_mode(matmul, "fft")


def test_load_model_explains_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.keras")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(ValueError, match="runtime"):
        load_model(onnx_file)


# A faithful copy of the original notebooks' layer code (class names, constructor, weight
# names and order), used only to write a .keras file in the original release's layout.
ORIGINAL_LAYOUT = textwrap.dedent(
    '''
    import sys, numpy as np, tensorflow as tf, keras
    from keras import layers, models

    class SpectralFilterLayer(layers.Layer):
        def __init__(self, filters, **kwargs): super().__init__(**kwargs); self.filters = filters
        def build(self, input_shape):
            _, h, w, c = input_shape
            shape = (c, self.filters, h, w // 2 + 1)
            self.real_weights = self.add_weight(name="real_weights", shape=shape, initializer="glorot_uniform")
            self.imag_weights = self.add_weight(name="imag_weights", shape=shape, initializer="glorot_uniform")
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        def call(self, inputs):
            x = tf.signal.rfft2d(tf.transpose(inputs, [0, 3, 1, 2]))
            y = tf.einsum("bchw,cfhw->bfhw", x, tf.complex(self.real_weights, self.imag_weights))
            return tf.transpose(tf.signal.irfft2d(y), [0, 2, 3, 1]) + self.bias
        def get_config(self):
            config = super().get_config(); config.update({"filters": self.filters}); return config

    class BilinearFusion(layers.Layer):
        def call(self, inputs):
            s, f = inputs
            outer = tf.matmul(tf.expand_dims(s, -1), tf.expand_dims(f, -1), transpose_b=True)
            v = layers.Flatten()(outer)
            v = tf.sign(v) * tf.sqrt(tf.abs(v) + 1e-5)
            return tf.nn.l2_normalize(v, axis=-1)
        def compute_output_shape(self, input_shape):
            return (input_shape[0][0], input_shape[0][1] * input_shape[1][1])

    inputs = layers.Input((32, 32, 1))
    s = layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    s = layers.Dense(16, activation="relu")(s)
    x = layers.ReLU()(layers.BatchNormalization()(SpectralFilterLayer(32)(inputs)))
    x = layers.GlobalAveragePooling2D()(x)
    f = layers.BatchNormalization()(layers.Dense(4, activation="relu")(x))
    z = BilinearFusion()([s, f])
    model = models.Model(inputs, layers.Dense(4, activation="softmax")(z))
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    for w in model.weights:  # non-trivial weights everywhere, the bias included
        w.assign(rng.normal(scale=0.05, size=w.shape).astype("float32"))
    x = rng.random((3, 32, 32, 1)).astype("float32")
    model.fit(x, np.array([0, 1, 2]), epochs=1, verbose=0)  # saves Adam state too, like the release
    model.save(sys.argv[1])
    np.save(sys.argv[2], x)
    np.save(sys.argv[3], model.predict(x, verbose=0))
    '''
)


def test_original_release_layout_loads_and_exports_to_matmul(tmp_path):
    script = tmp_path / "original.py"
    script.write_text(ORIGINAL_LAYOUT)
    paths = [tmp_path / "orig.keras", tmp_path / "x.npy", tmp_path / "y.npy"]
    subprocess.run([sys.executable, str(script), *map(str, paths)], check=True, capture_output=True)

    loaded = load_model(paths[0])
    x, expected = np.load(paths[1]), np.load(paths[2])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    assert any(isinstance(layer, SpectralFilter) for layer in loaded.layers)
    assert any(isinstance(layer, BilinearFusion) for layer in loaded.layers)
    set_spectral_mode(loaded, "matmul")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)


def test_fresh_process_loads_after_import(tmp_path):
    path = tmp_path / "m.keras"
    build_model("busi", input_shape=(32, 32, 1)).save(path)
    code = f"import keras, s3f_edge; m = keras.saving.load_model({str(path)!r}); print(type(m.get_layer('spectral_filter2')).__name__)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip().endswith("SpectralFilter")


def test_reloaded_original_model_saves_and_loads_again(tmp_path):
    script = tmp_path / "original.py"
    script.write_text(ORIGINAL_LAYOUT)
    paths = [tmp_path / "orig.keras", tmp_path / "x.npy", tmp_path / "y.npy"]
    subprocess.run([sys.executable, str(script), *map(str, paths)], check=True, capture_output=True)
    resaved = tmp_path / "resaved.keras"
    load_model(paths[0]).save(resaved)
    np.testing.assert_allclose(load_model(resaved).predict(np.load(paths[1]), verbose=0), np.load(paths[2]), atol=1e-6)
