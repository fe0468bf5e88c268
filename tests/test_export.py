"""s3f-edge export: lowering, hard checks, parity, metadata, reduced precision, Triton, TensorRT guards."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import hardware_missing
from helpers import original_layout_files

from s3f_edge.errors import InputError, OutputExistsError
from s3f_edge.export import precision as _precision
from s3f_edge.export.checks import ExportCheckError, check_onnx
from s3f_edge.export.onnx_export import ExportOptions, ParityError, export_model
from s3f_edge.runtime.parity import FP32_MAX_ABS_DIFF
from s3f_edge.testing import saved_model

_TO_FLOAT16 = _precision.to_float16  # the real conversion, for a test that replaces it
PRESET_SHAPES = {"brisc2025": (48, 64, 1), "chest-xray": (48, 64, 1), "busi": (32, 48, 1), "ham10000": (45, 60, 3)}


def assert_exported(result, fft):
    for results in result.parity.values():
        for parity in results:
            assert parity.max_abs_diff <= FP32_MAX_ABS_DIFF and parity.top1_agreement == 1.0, parity
    ops = {node.op_type for node in onnx.load(result.onnx_path).graph.node}
    assert ("DFT" in ops) == (fft == "dft")
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("image", "probs")
    assert isinstance(inp.shape[0], str) or inp.shape[0] is None, "batch dimension must be dynamic"


@pytest.mark.parametrize("fft", ["matmul", "dft"])
@pytest.mark.parametrize("preset", list(PRESET_SHAPES))
def test_every_preset_exports_with_parity(tmp_path, preset, fft):
    model_path = saved_model(tmp_path / "m.keras", preset, PRESET_SHAPES[preset])
    result = export_model(model_path, ExportOptions(out_dir=tmp_path / "out", fft=fft))
    assert_exported(result, fft)


@pytest.mark.parametrize("fft", ["matmul", "dft"])
@pytest.mark.parametrize("preset", ["brisc2025", "chest-xray"])
def test_full_size_presets_export(tmp_path, preset, fft):
    """brisc2025 at its full 256x256 and chest-xray at its non-square 384x512."""
    from s3f_edge.model import get_preset

    shape = get_preset(preset).input_shape
    result = export_model(saved_model(tmp_path / "m.keras", preset, shape),
                          ExportOptions(out_dir=tmp_path / "out", fft=fft))
    assert_exported(result, fft)


def test_metadata_travels_in_onnx_and_json(tmp_path):
    model_path = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1), class_names=["a", "b", "c", "d"])
    result = export_model(model_path, ExportOptions(out_dir=tmp_path / "out"))
    props = {p.key: p.value for p in onnx.load(result.onnx_path).metadata_props}
    full = json.loads(props["s3f_edge"])
    assert json.loads(props["class_names"]) == ["a", "b", "c", "d"]
    assert json.loads(props["preprocessing"])["height"] == 32
    assert full["fft_lowering"] == "matmul" and full["precision"] == "fp32"
    assert len(full["source_sha256"]) == 64 and {"tensorflow", "tf2onnx", "s3f_edge"} <= set(full["versions"])
    side = json.loads((tmp_path / "out" / "model.json").read_text())
    assert side["class_names"] == ["a", "b", "c", "d"] and side["parity"]["fp32"][0]["inputs"] == "real images"


def test_original_release_layout_exports(tmp_path):
    path, x, expected = original_layout_files(tmp_path)
    with pytest.raises(InputError, match="--class-names"):
        export_model(path, ExportOptions(out_dir=tmp_path / "out"))
    for fft in ("matmul", "dft"):
        result = export_model(path, ExportOptions(out_dir=tmp_path / fft, fft=fft, class_names=list("abcd")))
        session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {"image": x})[0]
        assert np.isfinite(outputs).all()
        np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_fp16_keeps_the_spectral_block_in_fp32(tmp_path):
    model_path = saved_model(tmp_path / "m.keras", "brisc2025", (64, 64, 1))
    result = export_model(model_path, ExportOptions(out_dir=tmp_path / "out", precision="fp16"))
    reduced = onnx.load(tmp_path / "out" / "model.fp16.onnx")
    initializers = {t.name: t for t in reduced.graph.initializer}
    spectral = [n for n in reduced.graph.node if "spectral_filter1" in n.name and n.op_type == "MatMul"]
    assert spectral, "spectral MatMul nodes not found"
    constant_inputs = [initializers[i] for n in spectral for i in n.input if i in initializers]
    assert constant_inputs and all(t.data_type == onnx.TensorProto.FLOAT for t in constant_inputs)
    convs = [initializers[n.input[1]] for n in reduced.graph.node if n.op_type == "Conv" and n.input[1] in initializers]
    assert convs and all(t.data_type == onnx.TensorProto.FLOAT16 for t in convs)
    real = result.parity["fp16"][0]
    assert real.inputs == "real images" and real.top1_agreement >= 0.99 and real.max_abs_diff < 0.05


def test_int8_static_quantization_on_real_images(tmp_path, sample_dir, monkeypatch):
    model_path = saved_model(tmp_path / "m.keras", "brisc2025", (64, 64, 1))
    result = export_model(model_path, ExportOptions(out_dir=tmp_path / "out", precision="int8",
                                                    calib=sample_dir / "train"))
    quantized = onnx.load(tmp_path / "out" / "model.int8.onnx")
    ops = [n.op_type for n in quantized.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    producers = {o: n for n in quantized.graph.node for o in n.output}
    spectral = [n for n in quantized.graph.node if "/spectral_filter1_1/" in n.name]
    consumers = {i: n for n in quantized.graph.node for i in n.input}
    conv1 = next(n for n in quantized.graph.node if n.op_type == "Conv" and "spatial_block1_conv1" in n.name)
    relu = consumers[conv1.output[0]]
    assert spectral and relu.op_type == "Relu"
    # these read float tensors (kept in float by measurement), never dequantized ones
    for node in spectral + [conv1, relu]:
        assert all(producers[i].op_type != "DequantizeLinear" for i in node.input if i in producers), node.name
    quantize = consumers[relu.output[0]]  # the second convolution is quantized: Relu -> Q -> DQ -> Conv
    dequantize = consumers[quantize.output[0]]
    assert (quantize.op_type, dequantize.op_type, consumers[dequantize.output[0]].op_type) == (
        "QuantizeLinear", "DequantizeLinear", "Conv")
    assert result.parity["int8"][0].top1_agreement >= 0.99 and result.parity["int8"][0].nonfinite_candidate == 0
    # The form TensorRT's explicit quantization takes: int8 zero points that are all 0, per-tensor activations,
    # float biases (no int32 DequantizeLinear), and every Relu still there (symmetric ranges never clip at 0).
    from s3f_edge.export.precision import quantization_problems

    assert quantization_problems(quantized) == []
    initializers = {t.name: t for t in quantized.graph.initializer}
    dequantized = [initializers[n.input[0]] for n in quantized.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in initializers]
    assert dequantized and all(t.data_type == onnx.TensorProto.INT8 for t in dequantized)
    stored = json.loads({p.key: p.value for p in quantized.metadata_props}["s3f_edge"])
    assert stored["int8_weight_bits"] == 8 and stored["int8_calibration"]["images"] == 48
    weight_range = lambda model: max(int(np.abs(onnx.numpy_helper.to_array(t)).max())  # noqa: E731
                                     for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8)
    assert weight_range(quantized) == 127
    # 7-bit weights on request: on x86 CPUs without VNNI, ONNX Runtime multiplies u8 activations (int8 + 128) by
    # s8 weights with VPMADDUBSW, whose 16-bit pair sums stay exact only while 2 * 255 * |w| < 2^15.
    from s3f_edge.data.preprocess import Preprocessing
    from s3f_edge.export.precision import calibration_images, to_int8

    to_int8(tmp_path / "out" / "model.onnx", tmp_path / "seven.onnx",
            calibration_images(sample_dir / "train", Preprocessing(64, 64, 1), 16), [], weight_bits=7)
    assert weight_range(onnx.load(tmp_path / "seven.onnx")) <= 64
    relus = lambda model: sum(n.op_type == "Relu" for n in model.graph.node)  # noqa: E731
    assert relus(quantized) == relus(onnx.load(tmp_path / "out" / "model.onnx"))
    # ONNX Runtime's fused int8 kernels compute what the Q/DQ graph says.
    from s3f_edge.runtime.parity import real_batch

    images = real_batch(Preprocessing(64, 64, 1), sample_dir / "test")
    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(tmp_path / "out" / "model.int8.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"image": images})[0])
    assert np.isfinite(outputs[1]).all()
    # (rounding differs between the Q/DQ reference and the fused kernels, so near-ties may flip)
    assert (outputs[0].argmax(1) == outputs[1].argmax(1)).mean() >= 0.9 and np.abs(outputs[0] - outputs[1]).max() < 0.05
    with pytest.raises(InputError, match="--calib"):
        ExportOptions(out_dir=tmp_path, precision="int8").validate()
    # The runtime refuses 8-bit weights where they would saturate, and says how to re-export.
    from s3f_edge.runtime import load_predictor, onnx_backend
    from s3f_edge.runtime.predictor import ModelContractError

    int8_file = tmp_path / "out" / "model.int8.onnx"
    for cpu, outcome in ((False, None), (None, RuntimeWarning), (True, ModelContractError)):
        monkeypatch.setattr(onnx_backend, "x86_without_vnni", lambda cpu=cpu: cpu)
        if outcome is None:
            load_predictor(int8_file, backend="onnx-cpu")
        elif outcome is RuntimeWarning:
            with pytest.warns(RuntimeWarning, match="int8-weight-bits 7"):
                load_predictor(int8_file, backend="onnx-cpu")
        else:
            with pytest.raises(ModelContractError, match="int8-weight-bits 7"):
                load_predictor(int8_file, backend="onnx-cpu")
    load_predictor(tmp_path / "out" / "model.onnx", backend="onnx-cpu")  # FP32 runs anywhere


def test_quantization_check_refuses_what_tensorrt_would():
    from s3f_edge.export.precision import quantization_problems

    def qdq(zero_point, scale=(0.1,), activation=True):
        tensors = [onnx.numpy_helper.from_array(np.array(scale, np.float32).reshape(-1 if len(scale) > 1 else ()), "s"),
                   onnx.numpy_helper.from_array(
                       np.asarray(zero_point).reshape(np.shape(scale) if len(scale) > 1 else ()), "z")]
        if not activation:
            tensors.append(onnx.numpy_helper.from_array(np.ones((len(scale), 2), np.float32), "x"))
        node = onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="q",
                                     **({"axis": 0} if len(scale) > 1 else {}))
        graph = onnx.helper.make_graph([node], "g", [] if not activation else
                                       [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 2])],
                                       [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT8, None)],
                                       initializer=tensors)
        return onnx.helper.make_model(graph)

    assert quantization_problems(qdq(np.int8(0))) == []
    assert "zero point" in quantization_problems(qdq(np.int8(3)))[0]
    assert "zero point" in quantization_problems(qdq(np.uint8(0)))[0]  # uint8 is asymmetric's type
    assert "per tensor" in quantization_problems(qdq(np.zeros(4, np.int8), scale=(0.1,) * 4))[0]
    assert quantization_problems(qdq(np.zeros(4, np.int8), scale=(0.1,) * 4, activation=False)) == []  # weights
    assert "positive" in quantization_problems(qdq(np.int8(0), scale=(0.0,)))[0]


def test_parity_failure_stops_the_export(tmp_path, monkeypatch):
    import s3f_edge.export.onnx_export as exporter

    convert = exporter.keras_to_onnx

    def tampered(model, fft="matmul", opset=17):
        proto = convert(model, fft, opset)
        head = next(t for t in proto.graph.initializer if "probs" in t.name and len(t.dims) == 2)
        weights = onnx.numpy_helper.to_array(head)
        weights = weights + np.random.default_rng(0).normal(scale=0.5, size=weights.shape).astype(np.float32)
        head.CopyFrom(onnx.numpy_helper.from_array(weights, head.name))
        return proto

    monkeypatch.setattr(exporter, "keras_to_onnx", tampered)
    with pytest.raises(ParityError, match="disagrees with Keras"):
        export_model(saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1)),
                     ExportOptions(out_dir=tmp_path / "out"))
    assert not (tmp_path / "out" / "model.onnx").exists()
    assert (tmp_path / "out" / "model.onnx.failed").exists()  # kept for inspection under a name that says so


def test_a_reexport_never_mixes_the_files_of_two_models(tmp_path):
    first = saved_model(tmp_path / "a.keras", "brisc2025", (32, 32, 1), seed=0)
    second = saved_model(tmp_path / "b.keras", "brisc2025", (32, 32, 1), seed=1)
    out = tmp_path / "out"
    export_model(first, ExportOptions(out_dir=out, precision="fp16"))
    with pytest.raises(OutputExistsError, match="model.fp16.onnx.*--overwrite"):
        export_model(second, ExportOptions(out_dir=out))
    assert json.loads((out / "model.json").read_text())["source_model"] == "a.keras"  # refused: untouched
    (out / "timing.cache").write_bytes(b"kernel timings of one GPU: valid for any model")
    export_model(second, ExportOptions(out_dir=out, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx", "timing.cache"]  # no stale FP16 file
    assert json.loads((out / "model.json").read_text())["source_model"] == "b.keras"


@pytest.mark.parametrize("count", [1, 5, 8, 13, 50, 100, 1024])
def test_the_calibration_reader_feeds_batches_of_one_shape(count):
    """ONNX Runtime's histogram calibrators (percentile, entropy) stack every batch's activations into one array:
    a short last batch made that array ragged (ValueError: inhomogeneous shape) unless the count was a multiple
    of 8."""
    from s3f_edge.export.precision import _ImageCalibrationReader

    images = np.arange(count, dtype=np.float32).reshape(count, 1, 1, 1)
    reader = _ImageCalibrationReader(images, "image")
    batches = list(iter(reader.get_next, None))
    assert len({batch["image"].shape for batch in batches}) == 1 and len(batches[0]["image"]) <= 8
    np.testing.assert_array_equal(np.concatenate([batch["image"] for batch in batches]), images)  # each once


def test_int8_calibrates_on_any_number_of_images(tmp_path, sample_dir):
    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1))
    result = export_model(model, ExportOptions(out_dir=tmp_path / "out", precision="int8", calib=sample_dir / "train",
                                               calib_images=13))  # 13: no batch size above 1 divides it
    stored = json.loads({p.key: p.value for p in onnx.load(tmp_path / "out" / "model.int8.onnx").metadata_props}[
        "s3f_edge"])
    assert stored["int8_calibration"]["images"] == 13 and result.parity["int8"][0].nonfinite_candidate == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.int8.onnx", "model.json", "model.onnx"]


def _tampered_float16(model, keep):
    """An FP16 conversion that breaks the head's weights: the FP16 file then fails its parity check."""
    converted = _TO_FLOAT16(model, keep)
    head = next(t for t in converted.graph.initializer if "probs" in t.name and len(t.dims) == 2)
    weights = onnx.numpy_helper.to_array(head)
    head.CopyFrom(onnx.numpy_helper.from_array(-weights * 3, head.name))
    return converted


def _failing_int8(*args, **kwargs):
    raise ExportCheckError("INT8 conversion failed (a deliberate failure for this test)")


@pytest.mark.parametrize("precision, broken, message, left", [
    ("fp16", _tampered_float16, "fp16 disagrees with Keras", ["model.fp16.onnx.failed", "model.onnx"]),
    ("int8", _failing_int8, "deliberate", ["model.onnx"]),
])
def test_a_failed_reduced_precision_keeps_the_verified_fp32_file(tmp_path, sample_dir, monkeypatch, precision, broken,
                                                                 message, left):
    """model.onnx passed its own checks, then the FP16 or INT8 step failed: only that precision's file is set aside
    (*.failed), the FP32 file stays usable, no model.json claims a finished export, and the CLI says so in one line."""
    from click.testing import CliRunner

    import s3f_edge.export.precision as precision_module
    from s3f_edge.cli import main
    from s3f_edge.runtime import load_predictor

    monkeypatch.setattr(precision_module, "to_float16" if precision == "fp16" else "to_int8", broken)
    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1))
    result = CliRunner().invoke(main, ["export", str(model), "--out", str(tmp_path / "out"), "--precision", precision,
                                       "--calib", str(sample_dir / "train"), "--calib-images", "16"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and "model.onnx (fp32) passed its checks and is kept" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == left
    probabilities = load_predictor(tmp_path / "out" / "model.onnx").predict(
        np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32))
    assert np.isfinite(probabilities).all() and probabilities.shape == (2, 4)


def test_a_failed_fp32_export_leaves_only_failed_files(tmp_path, monkeypatch):
    """Before model.onnx passed its checks, nothing is verified: every file this export wrote is set aside."""
    import s3f_edge.export.onnx_export as exporter

    def broken(*args, **kwargs):
        raise ExportCheckError("FP32 check failed (a deliberate failure for this test)")

    monkeypatch.setattr(exporter, "_require_parity", broken)
    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1))
    with pytest.raises(ExportCheckError, match="deliberate"):
        export_model(model, ExportOptions(out_dir=tmp_path / "out", precision="fp16"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx.failed"]


def test_what_can_be_refused_is_refused_before_anything_is_written(tmp_path):
    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no readable images for the parity check"):
        export_model(model, ExportOptions(out_dir=tmp_path / "out", parity_images=tmp_path / "empty"))
    with pytest.raises(InputError, match="no images to calibrate"):
        export_model(model, ExportOptions(out_dir=tmp_path / "out", precision="int8", calib=tmp_path / "empty"))
    (tmp_path / "text.keras").write_text("not a model")
    with pytest.raises(InputError, match="not a Keras model file"):
        export_model(tmp_path / "text.keras", ExportOptions(out_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_int8_export_prints_nothing_of_the_quantizer(tmp_path, sample_dir, capfd):
    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1))
    export_model(model, ExportOptions(out_dir=tmp_path / "out", precision="int8", calib=sample_dir / "train",
                                      calib_images=16))
    captured = capfd.readouterr()
    assert captured.out + captured.err == ""  # not a line of the quantizer's, whatever its wording


def _tiny_graph(op_type, domain="", opset=17, elem=onnx.TensorProto.FLOAT, shapes=([1, 4], [1, 4]), **attrs):
    node = onnx.helper.make_node(op_type, ["x"], ["y"], domain=domain, **attrs)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", elem, shapes[0])],
                                   [onnx.helper.make_tensor_value_info("y", elem, shapes[1])])
    imports = [onnx.helper.make_opsetid("", opset)] + ([onnx.helper.make_opsetid(domain, 1)] if domain else [])
    return onnx.helper.make_model(graph, opset_imports=imports)


def test_check_refuses_op_tensorrt_cannot_parse():
    check_onnx(_tiny_graph("Relu"), 17, tensorrt=True)
    planted = _tiny_graph("Det", shapes=([2, 4, 4], [2]))  # standard ONNX op that TensorRT's parser refuses
    check_onnx(planted, 17, tensorrt=False)
    with pytest.raises(ExportCheckError, match="Det.*not supported by TensorRT"):
        check_onnx(planted, 17, tensorrt=True)


def test_check_refuses_non_standard_and_complex_and_invalid():
    with pytest.raises(ExportCheckError, match="non-standard op"):
        check_onnx(_tiny_graph("FancyFFT", domain="com.example"), 17)
    with pytest.raises(ExportCheckError, match="complex"):
        check_onnx(_tiny_graph("Identity", elem=onnx.TensorProto.COMPLEX64), 17)
    with pytest.raises(ExportCheckError, match="onnx.checker"):
        check_onnx(_tiny_graph("Relu", opset=17, alpha=1.0), 17)  # Relu has no attribute alpha


def test_dft_needs_tensorrt_11_2():
    from s3f_edge.export.tensorrt_ops import tensorrt_problems

    node = onnx.helper.make_node("DFT", ["x"], ["y"], onesided=1)
    graph = onnx.helper.make_graph([node], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5, 2])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert any("11.2" in p for p in tensorrt_problems(model, (10, 15)))
    assert tensorrt_problems(model, (11, 2)) == []


@pytest.mark.parametrize("kwargs,message", [
    ({"fft": "dft", "opset": 13}, "DFT exists from opset 17"),
    ({"opset": 19}, "up to 18"),
    ({"fft": "cufft"}, "--fft"),
    ({"trt_batch": (8, 4, 32)}, "min <= opt <= max"),
])
def test_bad_options_are_refused(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        ExportOptions(out_dir=tmp_path, **kwargs).validate()


def test_triton_repository_config_is_valid_against_triton_schema(tmp_path):
    from google.protobuf import text_format

    from s3f_edge.export.triton import validate_config

    model_path = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1), class_names=["a", "b", "c", "d"])
    export_model(model_path, ExportOptions(out_dir=tmp_path / "out", triton_repo=tmp_path / "repo",
                                           trt_batch=(1, 4, 16)))
    text = (tmp_path / "repo" / "s3f_net" / "config.pbtxt").read_text()
    config = validate_config(text)
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert [i.name for i in config.input] == ["image"] and list(config.input[0].dims) == [32, 32, 1]
    assert [o.name for o in config.output] == ["probs"] and list(config.output[0].dims) == [4]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert (tmp_path / "repo" / "s3f_net" / "1" / "model.onnx").is_file()
    assert (tmp_path / "repo" / "s3f_net" / "labels.txt").read_text().split() == ["a", "b", "c", "d"]
    with pytest.raises(text_format.ParseError):
        validate_config(text.replace("max_batch_size", "max_batch"))  # the schema catches typos
    with pytest.raises(text_format.ParseError):
        validate_config(text.replace("TYPE_FP32", "TYPE_FLOAT32"))


def test_trt_without_tensorrt_fails_fast_with_install_hint(tmp_path):
    if hardware_missing("tensorrt") is None:
        pytest.skip("TensorRT and a GPU are present here")
    from s3f_edge.runtime.tensorrt_backend import TensorRTUnavailable

    with pytest.raises(TensorRTUnavailable, match=r"s3f-edge\[gpu\]|GPU"):
        export_model(tmp_path / "missing-but-never-read.keras", ExportOptions(out_dir=tmp_path, trt=True))


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_builds_and_refuses_other_gpus(tmp_path, precision):
    from s3f_edge.errors import EngineMismatch
    from s3f_edge.runtime.tensorrt_env import check_engine_compatible

    model_path = saved_model(tmp_path / "m.keras", "brisc2025", (64, 64, 1))
    export_model(model_path, ExportOptions(out_dir=tmp_path / "out", precision=precision, trt=True,
                                           trt_batch=(1, 2, 4)))
    engine = tmp_path / "out" / f"model.{precision}.engine"
    from s3f_edge.runtime import load_predictor
    from s3f_edge.runtime.verify import verify_backends

    predictor = load_predictor(engine)
    assert predictor.backend == "tensorrt" and predictor.class_names == ["class_0", "class_1", "class_2", "class_3"]
    (report,) = verify_backends(model_path, [engine], None)
    assert not report["failures"], report
    sidecar = check_engine_compatible(engine)
    assert {"gpu_name", "compute_capability", "tensorrt_version", "onnx_sha256"} <= set(sidecar)
    (tmp_path / "out" / "timing.cache").stat()
    forged = json.loads(engine.with_name(engine.name + ".json").read_text())
    engine.with_name(engine.name + ".json").write_text(json.dumps({**forged, "gpu_name": "Some Other GPU"}))
    with pytest.raises(EngineMismatch, match="rebuild"):
        check_engine_compatible(engine)


def test_accuracy_change_is_reported_on_labelled_images(tmp_path, sample_dir):
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    model_path = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1), class_names=classes)
    result = export_model(model_path, ExportOptions(out_dir=tmp_path / "out", precision="fp16",
                                                    parity_images=sample_dir / "test"))
    # The reported accuracies, recomputed here independently: Keras and each ONNX file on the 24 labelled images.
    from s3f_edge.data.folders import discover, load_split
    from s3f_edge.model import load_model
    from s3f_edge.runtime import load_predictor

    test = discover(sample_dir).test
    images, labels, _ = load_split(test, load_predictor(result.onnx_path).contract)
    keras_accuracy = float((load_model(model_path).predict(images, verbose=0).argmax(1) == labels).mean())
    for precision, onnx_file in (("fp32", result.onnx_path), ("fp16", tmp_path / "out" / "model.fp16.onnx")):
        real = result.parity[precision][0]
        assert real.count == 24 and real.inputs == "real images"
        assert real.reference_accuracy == pytest.approx(keras_accuracy, abs=1e-12)
        onnx_accuracy = float((load_predictor(onnx_file).predict(images).argmax(1) == labels).mean())
        assert real.candidate_accuracy == pytest.approx(onnx_accuracy, abs=1e-12)
    assert 0.0 < keras_accuracy < 1.0  # input-sensitive model: the comparison is not between constants
    packaged = export_model(model_path, ExportOptions(out_dir=tmp_path / "packaged"))  # '<class>_' file names
    assert packaged.parity["fp32"][0].reference_accuracy is not None
    unlabelled = export_model(saved_model(tmp_path / "u.keras", "brisc2025", (32, 32, 1)),
                              ExportOptions(out_dir=tmp_path / "u"))
    assert unlabelled.parity["fp32"][0].reference_accuracy is None


def test_parity_comparison_counts_disagreement_and_nonfinite_outputs():
    from s3f_edge.runtime.parity import compare, parity_failures

    labels = np.array([0, 1, 2, 0])
    reference = np.eye(3)[[0, 1, 2, 1]]  # right on 3 of 4
    candidate = np.eye(3)[[0, 1, 1, 0]]  # right on 3 of 4, but not the same images
    result = compare(reference, candidate, "real images", labels)
    assert (result.reference_accuracy, result.candidate_accuracy, result.top1_agreement) == (0.75, 0.75, 0.5)
    assert result.max_abs_diff == 1.0 and parity_failures([result], "fp16") and parity_failures([result], "fp32")

    broken = reference.copy()
    broken[1:] = np.nan  # argmax of a NaN row is 0 and NaN > tolerance is False: both would pass unchecked
    nan_result = compare(reference, broken, "random")
    assert nan_result.nonfinite_candidate == 3 and nan_result.top1_agreement == 0.25
    assert any("NaN" in failure for failure in parity_failures([nan_result], "fp32"))
    assert any("reference" in failure for failure in parity_failures([compare(broken, reference, "random")], "fp32"))
    assert not parity_failures([compare(reference, reference + 1e-6, "random")], "fp32")


def test_only_a_near_tie_of_the_reference_may_flip():
    """A reduced-precision file may pick the other class of an image the reference cannot decide (gap <= 0.02),
    never one the reference prefers clearly."""
    from s3f_edge.runtime.parity import NEAR_TIE, compare, parity_failures

    reference = np.array([[0.4994, 0.4991, 0.0015], [0.30, 0.69, 0.01], [0.9, 0.05, 0.05]])
    flipped_tie = np.array([[0.4990, 0.4995, 0.0015], [0.30, 0.69, 0.01], [0.9, 0.05, 0.05]])
    result = compare(reference, flipped_tie, "real images")
    assert (result.top1_agreement, result.near_ties) == (1.0, 1) and not parity_failures([result], "fp16")
    flipped_clear = reference[:, [1, 0, 2]]  # rows 2 and 3 (0.69 vs 0.30, 0.9 vs 0.05) are no ties
    result = compare(reference, flipped_clear, "real images")
    assert result.top1_agreement == pytest.approx(1 / 3) and result.near_ties == 1
    assert parity_failures([result], "int8")
    just_over = np.array([[0.5, 0.5 - 2 * NEAR_TIE, 2 * NEAR_TIE]])
    assert compare(just_over, just_over[:, [1, 0, 2]], "real images").top1_agreement == 0.0
    nan_row = np.array([[np.nan, 0.5, 0.5]])
    assert compare(reference[:1], nan_row, "real images").top1_agreement == 0.0


@pytest.fixture(scope="module")
def nan_models(tmp_path_factory):
    """A healthy model and a copy whose outputs are all NaN (a negative BatchNorm variance), both with metadata,
    and an ONNX file of the NaN copy written without any check (as a careless exporter would)."""
    import keras

    from s3f_edge.export.onnx_export import _attach_metadata, keras_to_onnx
    from s3f_edge.model import load_model
    from s3f_edge.model.metadata import read_metadata, save_model_atomically

    root = tmp_path_factory.mktemp("nan")
    good = saved_model(root / "good.keras", "brisc2025", (32, 32, 1),
                       class_names=["glioma", "meningioma", "notumor", "pituitary"])
    model, metadata = load_model(good), read_metadata(good)
    for norm in (layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)):
        norm.moving_variance.assign(-np.ones(norm.moving_variance.shape, np.float32))
    assert np.isnan(model.predict(np.random.default_rng(0).random((2, 32, 32, 1), np.float32), verbose=0)).all()
    save_model_atomically(model, root / "nan.keras", metadata)
    proto = keras_to_onnx(model)
    _attach_metadata(proto, {**metadata, "fft_lowering": "matmul", "precision": "fp32",
                             "versions": {"s3f_edge": "test"}})
    onnx.save(proto, root / "nan.onnx")
    return {"good": good, "nan": root / "nan.keras", "nan_onnx": root / "nan.onnx"}


def test_nan_outputs_fail_export_verify_evaluate_and_bench(nan_models, tmp_path, sample_dir):
    from click.testing import CliRunner

    from s3f_edge.cli import main

    runner = CliRunner()
    exported = runner.invoke(main, ["export", str(nan_models["nan"]), "--out", str(tmp_path / "out")])
    assert exported.exit_code == 1 and "NaN" in exported.output, exported.output
    assert not (tmp_path / "out" / "model.onnx").exists()
    for reference in (nan_models["good"], nan_models["nan"]):
        verified = runner.invoke(main, ["verify", str(reference), str(nan_models["nan_onnx"])])
        assert verified.exit_code == 1 and "NaN" in verified.output, verified.output
    evaluated = runner.invoke(main, ["evaluate", str(nan_models["nan_onnx"]), str(sample_dir / "test"),
                                     "--out", str(tmp_path / "evaluate")])
    assert evaluated.exit_code == 1 and "NaN" in evaluated.output, evaluated.output
    benched = runner.invoke(main, ["bench", str(nan_models["nan_onnx"]), "--batch-sizes", "1", "--duration", "0.1",
                                   "--no-gemm", "--backends", "onnx-cpu"])
    assert benched.exit_code == 1 and "NaN" in benched.output, benched.output
    inferred = runner.invoke(main, ["infer", str(sample_dir / "test"), "--recursive", "--model",
                                    str(nan_models["nan_onnx"]), "--out", str(tmp_path / "r.csv"), "--quiet"])
    assert inferred.exit_code == 3  # every file gets a row, none a class
    rows = (tmp_path / "r.csv").read_text().splitlines()[1:]
    assert len(rows) == 24 and all(",error,model output is NaN" in row for row in rows)


def test_a_triton_repository_shared_with_other_models_keeps_theirs(tmp_path):
    model = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1))
    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    (repo / "other_model" / "config.pbtxt").write_text('name: "other_model"\n')
    (repo / "other_model" / "1" / "model.onnx").write_bytes(b"another team's model")
    export_model(model, ExportOptions(out_dir=tmp_path / "a", triton_repo=repo))
    with pytest.raises(OutputExistsError, match="s3f_net"):  # our own earlier model is refused...
        export_model(model, ExportOptions(out_dir=tmp_path / "b", triton_repo=repo))
    export_model(model, ExportOptions(out_dir=tmp_path / "b", triton_repo=repo, overwrite=True))
    # ...and the other model is neither a reason to refuse nor touched by --overwrite
    assert (repo / "other_model" / "1" / "model.onnx").read_bytes() == b"another team's model"
    assert (repo / "other_model" / "config.pbtxt").exists() and (repo / "s3f_net" / "config.pbtxt").exists()
