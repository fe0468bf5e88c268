"""Both SpectralFilter forms (FFT and DFT-as-matmul) against a float64 numpy reference of the layer's definition."""
import numpy as np
import pytest

from s3f_edge import SpectralFilter
from s3f_edge.data.preprocess import Preprocessing, load_image
from s3f_edge.model.fft_check import compare_forms
from s3f_edge.model.fft_check import numpy_spectral_filter as numpy_reference
from s3f_edge.model.fft_check import relative_l2_error as relative_error

TOLERANCE = 1e-5  # relative L2 error in float32


def built_layer(shape, filters, rng):
    layer = SpectralFilter(filters)
    layer.build((None, *shape))
    # A non-zero bias, small against the filtered signal, so the check still sees the transform.
    layer.bias.assign(rng.normal(scale=1e-3, size=filters).astype(np.float32))
    return layer


@pytest.mark.parametrize("mode", ["fft", "matmul", "dft"])
@pytest.mark.parametrize(
    "shape,filters",
    [((256, 256, 1), 32), ((384, 512, 1), 4), ((225, 300, 3), 4), ((64, 63, 1), 4), ((33, 47, 5), 6), ((17, 16, 2), 3),
     # W/2 prime (a dense half-length DFT), W = 2 and 4 (trivial stages), and W = 46 (W/2 = 23 prime, H prime)
     ((18, 34, 2), 3), ((16, 4, 1), 2), ((16, 2, 1), 2), ((23, 46, 1), 3)],
)
def test_matches_numpy_on_random_input(shape, filters, mode, rng):
    x = rng.random((2, *shape), dtype=np.float32)
    layer = built_layer(shape, filters, rng)
    layer.mode = mode
    out = layer(x)
    assert tuple(out.shape) == (2, *shape[:2], filters)
    assert relative_error(out, numpy_reference(x, layer)) < TOLERANCE


@pytest.mark.parametrize("mode", ["fft", "matmul"])
@pytest.mark.parametrize("size", [(256, 256), (384, 512), (225, 300)])
def test_matches_numpy_on_real_images(sample_images, size, mode, rng):
    contract = Preprocessing(height=size[0], width=size[1], channels=1)
    x = np.stack([load_image(p, contract) for p in sample_images[:3]])
    layer = built_layer((*size, 1), 8, rng)
    layer.mode = mode
    assert relative_error(layer(x), numpy_reference(x, layer)) < TOLERANCE


def test_channel_mixing_layer_of_sn2(rng):
    """SN2's second filter mixes 32 channels into 64 per frequency; both forms agree with numpy."""
    x = rng.normal(size=(2, 24, 20, 32)).astype(np.float32)
    layer = built_layer((24, 20, 32), 64, rng)
    reference = numpy_reference(x, layer)
    for mode in ("fft", "matmul", "dft"):
        layer.mode = mode
        assert relative_error(layer(x), reference) < TOLERANCE


def test_mode_switch_keeps_weights(rng):
    layer = built_layer((32, 32, 1), 4, rng)
    before = [w.numpy().copy() for w in layer.weights]
    x = rng.random((1, 32, 32, 1), dtype=np.float32)
    fft_out = np.asarray(layer(x))
    layer.mode = "matmul"
    matmul_out = np.asarray(layer(x))
    for old, new in zip(before, layer.weights):
        np.testing.assert_array_equal(old, new.numpy())
    np.testing.assert_allclose(matmul_out, fft_out, atol=1e-5)


def test_weight_shapes_names_and_init_follow_original():
    layer = SpectralFilter(32)
    layer.build((None, 256, 256, 1))
    assert [w.path.split("/")[-1] for w in layer.weights] == ["real_weights", "imag_weights", "bias"]
    assert tuple(layer.real_weights.shape) == (1, 32, 256, 129)
    assert layer.count_params() == 2_113_568
    # Keras glorot fans for (C, F, H, Wr): fan_in = H*C*F, fan_out = Wr*C*F -> limit 0.0221.
    limit = np.sqrt(6.0 / (256 * 32 + 129 * 32))
    assert np.abs(layer.real_weights.numpy()).max() <= limit
    assert np.abs(layer.real_weights.numpy()).max() > 0.9 * limit
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)


def test_unknown_mode_and_unsized_input_are_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        SpectralFilter(4, mode="wavelet")
    layer = SpectralFilter(4)
    with pytest.raises(ValueError, match="fixed-size"):
        layer.build((None, None, None, 1))


def test_config_round_trip():
    layer = SpectralFilter(7, mode="matmul", name="sf")
    clone = SpectralFilter.from_config(layer.get_config())
    assert (clone.filters, clone.mode, clone.name) == (7, "matmul", "sf")


def test_compare_forms_reports_both_modes(rng):
    errors = compare_forms(rng.random((1, 40, 30, 1), dtype=np.float32), filters=4)
    assert set(errors) == {"fft", "matmul"}
    assert max(errors.values()) < TOLERANCE


@pytest.mark.parametrize("shape", [(256, 256, 1), (225, 300, 3), (24, 20, 32), (17, 34, 1), (33, 47, 2)])
def test_every_form_of_the_matmul_lowering_matches_numpy(shape, rng):
    """The dense, the H-factored and the H-and-W-factored constants (benchmarks compare them) compute the same."""
    from s3f_edge.model.dft import dft_plan

    x = rng.random((2, *shape), dtype=np.float32)
    layer = built_layer(shape, 4, rng)
    reference = numpy_reference(x, layer)
    layer.mode = "matmul"
    for factor_height, factor_width in ((False, False), (True, False), (True, True)):
        layer._dft = dft_plan(shape[0], shape[1], "float32", factor_height, factor_width)
        out = np.asarray(layer(x))
        assert np.isfinite(out).all()
        assert relative_error(out, reference) < TOLERANCE, (factor_height, factor_width)


def test_flop_count_matches_the_exported_matmuls():
    """bench/flops.py's count of the matmul form equals the MatMul work in the exported ONNX graph (plus the
    element-wise terms it adds), so the README's executed-FLOP figures describe the real graph."""
    import keras
    import onnx

    from s3f_edge.bench.flops import spectral_filter_flops
    from s3f_edge.export.onnx_export import keras_to_onnx

    height, width, channels, filters = 64, 64, 1, 8
    inputs = keras.Input((height, width, channels))
    proto = keras_to_onnx(keras.Model(inputs, SpectralFilter(filters)(inputs)))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # one image: every shape becomes known
    proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)}
    shapes.update({t.name: list(t.dims) for t in proto.graph.initializer})
    matmul_flops = 0.0
    for node in proto.graph.node:
        if node.op_type == "MatMul":
            left, right, out = (shapes[name] for name in (node.input[0], node.input[1], node.output[0]))
            inner = left[-1] or right[-2]
            assert all(out) and inner, (node.name, left, right, out)
            matmul_flops += 2.0 * np.prod(out) * inner
    counted = spectral_filter_flops(height, width, channels, filters)["matmul"]
    assert matmul_flops > 0
    assert matmul_flops <= counted <= 1.5 * matmul_flops, (matmul_flops, counted)
