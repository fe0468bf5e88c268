"""How to quantize S3F-Net to INT8: every variant scored on a whole labelled test set, in one run.

    python benchmarks/int8_variants.py [--model s3f_edge/assets/default_model/model.keras]
        [--data $S3F_EDGE_DATA/brain_tumor_mri] [--out benchmarks/results]

Variants: ONNX Runtime's default static quantization (asymmetric activations, quantized biases, MinMax
ranges, the first 256 training files in path order); then the form TensorRT takes (symmetric activations,
zero points 0, float biases, per-channel weights; the spectral block, the start of the spatial branch and the classifier
head in float), without and with BatchNorm folded into the convolutions first, with 7- or 8-bit weights, on 256
or 1024 seeded calibration images, with percentile, MinMax and entropy ranges, with the whole first
spatial block or only its first convolution (which reads the raw image) in float. For each: accuracy and
macro-F1 on the test set, top-1 agreement with the FP32 ONNX file, how many zero points are not 0, and
ONNX Runtime p50 latency at batch 1 and 32 beside FP32 on the same images, all variants timed in turns
(three rounds each, the fastest kept). Writes int8_variants.json
and .md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_files import write_results  # noqa: E402  (benchmarks/ is the script's folder)

from s3f_edge.testing import require_data  # noqa: E402


def first_files_sample(folder: Path, contract, limit: int) -> np.ndarray:
    """A calibration set that ignores the classes: the first ``limit`` files in path order (one class folder,
    mostly)."""
    from s3f_edge.data.files import image_files
    from s3f_edge.data.preprocess import load_image

    return np.stack([load_image(path, contract) for path in image_files(folder, limit)])


def ort_default_int8(fp32: Path, out: Path, images: np.ndarray, exclude: list[str]) -> None:
    """INT8 with ONNX Runtime's defaults (asymmetric activations, int32 biases): what TensorRT cannot take."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from s3f_edge.export.precision import _ImageCalibrationReader, restore_float_inputs

    quantize_static(str(fp32), str(out), _ImageCalibrationReader(images, "image"), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    model = onnx.load(out)
    restore_float_inputs(model, set(exclude))
    onnx.save(model, out)


def nonzero_zero_points(path: Path) -> tuple[int, int]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    bad = sum(1 for n in nodes if len(n.input) > 2 and np.any(constants.get(n.input[2], np.zeros(1)) != 0))
    return bad, len(nodes)


def first_block_nodes(model) -> list[str]:
    """Every node from the first convolution to the first pooling: a larger float set than the export keeps."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [n for n in model.graph.node if n.op_type == "Conv" and "/spatial_block1_conv1" in n.name]
    found = []
    while frontier:
        node = frontier.pop()
        if node.name in found or node.op_type == "MaxPool":
            continue
        found.append(node.name)
        frontier += [c for output in node.output for c in consumers.get(output, [])]
    return found


def p50_ms_in_turns(predictors: list, images: np.ndarray, batch: int, seconds: float) -> list[float]:
    """p50 of every predictor, timed in turns so that all of them meet the same machine state."""
    from s3f_edge.bench.runner import measure_in_turns

    data = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))
    latencies, errors = measure_in_turns(dict(enumerate(p.predict for p in predictors)), data, 0.5, seconds)
    if errors:
        raise RuntimeError(f"a variant failed while timed: {errors}")
    return [round(float(np.median(latencies[i])) * 1e3, 3) for i in range(len(predictors))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("s3f_edge/assets/default_model/model.keras"))
    parser.add_argument("--data", type=Path, help="default: $S3F_EDGE_DATA/brain_tumor_mri")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    args.data = args.data or require_data("brain_tumor_mri", "--data")

    import onnx

    from s3f_edge.data.folders import discover, load_split
    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.export.precision import calibration_images, int8_float_nodes, layer_node_names, to_int8
    from s3f_edge.model import load_model, spectral_filters
    from s3f_edge.runtime import load_predictor
    from s3f_edge.train.metrics import macro_f1

    scratch = Path(tempfile.mkdtemp(prefix="int8-variants-"))
    fp32 = export_model(args.model, ExportOptions(out_dir=scratch)).onnx_path
    reference = load_predictor(fp32, backend="onnx-cpu")
    dataset = discover(args.data)
    test_x, test_y, _ = load_split(dataset.test, reference.contract)
    expected = reference.predict_all(test_x).argmax(1)
    proto = onnx.load(fp32)
    spectral = layer_node_names(proto, [layer.name for layer in spectral_filters(load_model(args.model))])
    train = args.data / "train"

    keep = int8_float_nodes(proto, load_model(args.model))  # spectral block, first convolution, classifier head
    first_block = keep + first_block_nodes(proto)
    samples = {count: calibration_images(train, reference.contract, count, seed=0) for count in (256, 1024)}
    # (label, method, calibration images, weight bits, fold BatchNorm first, float nodes); None: ONNX Runtime's defaults
    variants = [("ONNX Runtime defaults: asymmetric activations, int32 biases, MinMax, first 256 files", None, 256, 8,
                 False, spectral),
                ("symmetric, BatchNorm not folded, 7-bit weights, percentile, 256 images, first block in float",
                 "percentile", 256, 7, False, first_block),
                ("BatchNorm folded, 7-bit weights, percentile, 256 images, first block in float", "percentile", 256, 7,
                 True, first_block),
                ("BatchNorm folded, 7-bit weights, percentile, 1024 images, first block in float", "percentile",
                 1024, 7, True, first_block),
                ("BatchNorm folded, 8-bit weights, percentile, 256 images, first block in float", "percentile", 256, 8,
                 True, first_block),
                ("BatchNorm folded, 8-bit weights, percentile, 1024 images, first block in float", "percentile",
                 1024, 8, True, first_block),
                ("BatchNorm folded, 8-bit weights, minmax, 1024 images, first convolution in float", "minmax", 1024, 8,
                 True, keep),
                ("BatchNorm folded, 8-bit weights, entropy, 1024 images, first convolution in float", "entropy",
                 1024, 8, True, keep),
                ("BatchNorm folded, 7-bit weights, percentile, 1024 images, first convolution in float "
                 "(--int8-weight-bits 7)", "percentile", 1024, 7, True, keep),
                ("BatchNorm folded, 8-bit weights, percentile, 1024 images, first convolution in float "
                 "(export default)", "percentile", 1024, 8, True, keep)]
    rows = [{"variant": "FP32 (reference)", "file": fp32, "nonzero_zero_points": "-"}]
    for name, method, count, bits, fold, exclude in variants:
        path = scratch / f"int8-{len(rows)}.onnx"
        started = time.perf_counter()
        if method is None:
            ort_default_int8(fp32, path, first_files_sample(train, reference.contract, count), exclude)
        else:
            to_int8(fp32, path, samples[count], exclude, method, weight_bits=bits, fold_batchnorm=fold)
        rows.append({"variant": name, "file": path, "method": method, "calibration_images": count, "weight_bits": bits,
                     "seconds_to_quantize": round(time.perf_counter() - started, 1)})
    predictors = []
    for row in rows:
        predictor = reference if row["file"] == fp32 else load_predictor(row["file"], backend="onnx-cpu",
                                                                        metadata=reference.metadata)
        predictors.append(predictor)
        predicted = predictor.predict_all(test_x).argmax(1)
        row.update({"accuracy": round(float((predicted == test_y).mean()), 4),
                    "f1_macro": round(macro_f1(test_y, predicted, len(reference.class_names)), 4),
                    "top1_agreement_with_fp32": round(float((predicted == expected).mean()), 4),
                    "size_mb": round(row["file"].stat().st_size / 1e6, 2)})
        if row["file"] != fp32:
            row["nonzero_zero_points"] = "%d of %d" % nonzero_zero_points(row["file"])
        print({k: v for k, v in row.items() if k != "file"}, flush=True)
    for batch in (1, 32):
        for row, milliseconds in zip(rows, p50_ms_in_turns(predictors, test_x, batch, args.seconds)):
            row[f"p50_ms_batch{batch}"] = milliseconds
    for row in rows:
        row["file"] = row["file"].name

    result = {"date": time.strftime("%Y-%m-%d"), "model": str(args.model), "test_images": int(len(test_y)),
              "cpus": os.cpu_count(), "rows": rows}
    lines = [f"INT8 variants of {args.model.name} on {len(test_y)} test images of {args.data.name} "
             f"({result['date']}, {os.cpu_count()} CPUs, ONNX Runtime CPU, p50 of the fastest of 3 rounds taken in "
             f"turns, {args.seconds:g} s each variant).", "",
             "| variant | accuracy | macro-F1 | top-1 agreement with FP32 | non-zero zero points | MB "
             "| p50 ms, batch 1 | p50 ms, batch 32 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['accuracy']:.2%} | {row['f1_macro']:.3f} | "
                     f"{row['top1_agreement_with_fp32']:.2%} | {row['nonzero_zero_points']} | {row['size_mb']} | "
                     f"{row['p50_ms_batch1']} | {row['p50_ms_batch32']} |")
    write_results(args.out, "int8_variants", result, lines)


if __name__ == "__main__":
    main()
