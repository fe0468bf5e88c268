"""The output contract by position: output 0 is ``probs`` (N, K), output 1 ``ood_score`` (N,), in every exported
artefact of a calibrated model (ONNX FP32/FP16/INT8, the TensorRT engine's outputs and sidecar, Triton's
config.pbtxt). Deployments read outputs by position (``session.run(None, feed)[0]``), so names alone are not
enough."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from s3f_edge.contract import OOD_SCORE, OUTPUTS, PROBS
from s3f_edge.export.onnx_export import ExportOptions, export_model
from s3f_edge.testing import saved_model

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory, sample_dir) -> Path:
    """A tiny calibrated model (32x32, fitted on the sample images in seconds), saved as train would save it."""
    from s3f_edge.data.files import image_files
    from s3f_edge.data.preprocess import Preprocessing, load_image
    from s3f_edge.model import load_model
    from s3f_edge.model.metadata import read_metadata, save_model_atomically
    from s3f_edge.train.calibrate import calibrate_model

    root = tmp_path_factory.mktemp("calibrated")
    plain = saved_model(root / "plain.keras", "brisc2025", (32, 32, 1), class_names=CLASSES)
    files = image_files(sample_dir)
    images = np.stack([load_image(path, Preprocessing(32, 32, 1)) for path in files])
    labels = np.array([CLASSES.index(Path(path).parent.name) for path in files])
    model, calibration = calibrate_model(load_model(plain), images[::2], labels[::2], images[1::2], labels[1::2])
    path = root / "calibrated.keras"
    save_model_atomically(model, path, {**read_metadata(plain), "calibration": calibration})
    return path


@pytest.fixture(scope="module")
def exports(calibrated_model, tmp_path_factory, sample_dir) -> dict[str, Path]:
    """The calibrated model exported at each precision (the FP32 export also writes a Triton repository)."""
    root = tmp_path_factory.mktemp("exports")
    files = {}
    for precision in ("fp32", "fp16", "int8"):
        result = export_model(calibrated_model, ExportOptions(
            out_dir=root / precision, precision=precision, calib=sample_dir / "train", calib_images=16,
            triton_repo=root / "triton" if precision == "fp32" else None, copy_calibration=True))
        files[precision] = result.onnx_path if precision == "fp32" else root / precision / f"model.{precision}.onnx"
    files["triton"] = root / "triton"
    return files


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_onnx_file_gives_probs_first_and_ood_score_second(exports, precision):
    session = ort.InferenceSession(str(exports[precision]), providers=["CPUExecutionProvider"])
    outputs = session.get_outputs()
    assert [output.name for output in outputs] == list(OUTPUTS) == [PROBS, OOD_SCORE]
    assert [o.name for o in onnx.load(exports[precision]).graph.output] == [PROBS, OOD_SCORE]
    images = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    by_position = session.run(None, {"image": images})
    assert all(np.isfinite(value).all() for value in by_position)
    assert by_position[0].shape == (3, len(CLASSES)) and by_position[1].shape == (3,)
    np.testing.assert_allclose(by_position[0].sum(axis=1), 1.0, atol=1e-3)  # output 0 holds probabilities
    stored = json.loads(session.get_modelmeta().custom_metadata_map["s3f_edge"])
    assert stored["output_names"] == [PROBS, OOD_SCORE]


def test_the_triton_configuration_lists_probs_first(exports):
    from s3f_edge.export.triton import validate_config

    config = validate_config((exports["triton"] / "s3f_net" / "config.pbtxt").read_text())
    assert [output.name for output in config.output] == [PROBS, OOD_SCORE]
    assert list(config.output[0].dims) == [len(CLASSES)] and list(config.output[1].dims) == [1]


def test_a_graph_written_in_another_order_is_put_in_the_contracts_order():
    """tf2onnx flattens Keras's dict of outputs in sorted key order (ood_score first); the exporter reorders, and
    the hard checks refuse any graph left in another order."""
    from s3f_edge.errors import ExportCheckError
    from s3f_edge.export.checks import check_onnx
    from s3f_edge.export.graph_outputs import order_outputs

    info = onnx.helper.make_tensor_value_info
    nodes = [onnx.helper.make_node("Softmax", ["image"], [PROBS]),
             onnx.helper.make_node("ReduceSumSquare", ["image"], [OOD_SCORE], axes=[1], keepdims=0)]
    graph = onnx.helper.make_graph(nodes, "g", [info("image", onnx.TensorProto.FLOAT, ["N", 4])],
                                   [info(OOD_SCORE, onnx.TensorProto.FLOAT, ["N"]),
                                    info(PROBS, onnx.TensorProto.FLOAT, ["N", 4])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(ExportCheckError, match="output 0 must be probs"):
        check_onnx(model, 17)
    assert order_outputs(model) is model
    assert [o.name for o in model.graph.output] == [PROBS, OOD_SCORE]
    check_onnx(model, 17)
    probs, score = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"image": np.ones((2, 4), np.float32)})
    assert np.isfinite(probs).all() and np.isfinite(score).all()
    np.testing.assert_allclose(probs, 0.25)
    np.testing.assert_allclose(score, 4.0)


class _Tensor:
    def __init__(self, name):
        self.name, self.dtype = name, "DataType.FLOAT"


class _Network:
    """The part of a TensorRT network definition the output order uses: outputs in marking order."""

    def __init__(self, names):
        self.outputs = [_Tensor(name) for name in names]

    @property
    def num_outputs(self):
        return len(self.outputs)

    def get_output(self, index):
        return self.outputs[index]

    def unmark_output(self, tensor):
        self.outputs.remove(tensor)

    def mark_output(self, tensor):
        self.outputs.append(tensor)


def test_an_engines_outputs_and_sidecar_list_probs_first():
    """The engine's outputs are the parsed network's, in marking order: put in the contract's order before the
    build (what the sidecar then records), whatever order the ONNX file had."""
    from s3f_edge.export.tensorrt import network_outputs_in_contract_order

    network = _Network([OOD_SCORE, PROBS])
    assert [o.name for o in network_outputs_in_contract_order(network)] == [PROBS, OOD_SCORE]
    assert [network.get_output(i).name for i in range(network.num_outputs)] == [PROBS, OOD_SCORE]
    single = _Network(["dense_3"])  # a single output is the probabilities whatever its name
    assert [o.name for o in network_outputs_in_contract_order(single)] == ["dense_3"]


@pytest.mark.tensorrt
def test_a_calibrated_engine_gives_probs_first(calibrated_model, tmp_path):
    """Not run where s3f-edge was developed (no NVIDIA GPU there): bash benchmarks/gpu_check.sh runs it."""
    import tensorrt as trt

    export_model(calibrated_model, ExportOptions(out_dir=tmp_path / "out", trt=True, trt_batch=(1, 2, 4),
                                                 copy_calibration=True))
    engine_path = tmp_path / "out" / "model.fp32.engine"
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(engine_path.read_bytes())
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    assert outputs == [PROBS, OOD_SCORE]
    sidecar = json.loads(engine_path.with_name(engine_path.name + ".json").read_text())
    assert [name for name, _ in sidecar["io"]["outputs"]] == [PROBS, OOD_SCORE]
    assert sidecar["model_metadata"]["output_names"] == [PROBS, OOD_SCORE]
