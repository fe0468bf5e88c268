"""Test helpers: a .keras file in the original S3F-Net release's layout (synthetic models for tests and
benchmarks live in s3f_edge.testing)."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

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
    for layer in model.layers[1:]:  # kernels large enough that the output depends on the input
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
            layer.kernel.assign(rng.normal(scale=2.0 / np.sqrt(fan_in), size=layer.kernel.shape).astype("float32"))
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 50.0)  # the fused vector is L2-normalised: widen logits
    for layer in model.layers:  # but valid BatchNorm statistics: a negative variance makes every output NaN
        if isinstance(layer, layers.BatchNormalization):
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=layer.moving_variance.shape).astype("float32"))
    x = rng.random((3, 32, 32, 1)).astype("float32")
    model.fit(x, np.array([0, 1, 2]), epochs=1, verbose=0)  # saves Adam state too, like the release
    model.save(sys.argv[1])
    np.save(sys.argv[2], x)
    np.save(sys.argv[3], model.predict(x, verbose=0))
    '''
)


def original_layout_files(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """(.keras file in the original release's layout, 3 inputs, its outputs on them), written by a separate
    process that has only the original's code. The outputs are checked finite and input-dependent, so
    comparisons against them can fail."""
    script = folder / "original.py"
    script.write_text(ORIGINAL_LAYOUT)
    paths = [folder / "orig.keras", folder / "x.npy", folder / "y.npy"]
    subprocess.run([sys.executable, str(script), *map(str, paths)], check=True, capture_output=True)
    x, y = np.load(paths[1]), np.load(paths[2])
    assert np.isfinite(y).all(), "the original-layout model's outputs are not finite"
    assert np.ptp(y, axis=0).max() > 1e-4, "the original-layout model's outputs do not depend on its input"
    return paths[0], x, y
