#!/usr/bin/env bash
# One command for the first machine with an NVIDIA GPU: confirms the GPU and TensorRT paths and writes
# one report. These steps have not run on a GPU yet: every figure in the docs comes from a CPU-only machine.
#
#   bash benchmarks/gpu_check.sh [OUT]        (default OUT: gpu-check/)
#   GPU_EXTRA=gpu-cu13 bash benchmarks/gpu_check.sh   (CUDA 13 and TensorRT 11: ONNX DFT engines too)
#
# It creates .venv-gpu with s3f-edge[train,$GPU_EXTRA,dicom,dev,cluster] (onnxruntime-gpu, TensorRT, cuda-python; never
# the CPU onnxruntime; GPU_EXTRA defaults to gpu: CUDA 12, TensorRT 10), then:
#   1. records the machine: nvidia-smi, TensorRT / ONNX Runtime versions and providers;
#   2. runs the GPU and TensorRT tests (pytest -m "gpu or tensorrt"), then the whole suite, which must
#      also pass with the gpu extra (no test may assume CPU-only providers);
#   3. exports the bundled model with --trt at fp32, fp16 and int8 (each engine parity-checked inside
#      export), benchmarks Keras, ONNX Runtime (CPU, CUDA, TensorRT provider) and the engines, and runs
#      the accuracy x speed matrix with TensorRT rows on the brain MRI test set ($DATA, else
#      $S3F_EDGE_DATA/brain_tumor_mri; with neither, on the sample images);
#   4. runs infer --ray with one GPU actor (Ray started on this machine) on an engine and on the ONNX file,
#      and compares its rows with infer on one machine;
#   5. writes OUT/report.md with every step's exit code and the tables, plus the raw logs and JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
PYTHON=${PYTHON:-python3}
VENV=.venv-gpu
mkdir -p "$OUT"
REPORT="$OUT/report.md"
: > "$REPORT"
status() { echo "| $1 | $2 | $3 |" >> "$OUT/steps.md"; }
: > "$OUT/steps.md"

if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
GPU_EXTRA=${GPU_EXTRA:-gpu}
"$VENV/bin/python" -m pip install --quiet -e ".[train,$GPU_EXTRA,dicom,dev,cluster]" > "$OUT/install.log" 2>&1
status install $? "$OUT/install.log"
S3F="$VENV/bin/s3f-edge"
export TF_FORCE_GPU_ALLOW_GROWTH=true  # TensorFlow must not take the whole GPU from TensorRT

{
  nvidia-smi
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as m
import onnxruntime as ort
import tensorrt as trt
print("tensorrt", trt.__version__, "| onnxruntime-gpu", m.version("onnxruntime-gpu"),
      "| cuda-python", m.version("cuda-python"))
print("ONNX Runtime providers:", ort.get_available_providers())
print("ONNX Runtime build:", getattr(ort, "get_build_info", lambda: "(not reported)")())
from s3f_edge.runtime.formats import BACKENDS, unavailable_reason
for name in BACKENDS:
    print(f"backend {name}: {unavailable_reason(name) or 'available'}")
PY
} > "$OUT/machine.txt" 2>&1
status machine $? "$OUT/machine.txt"

"$VENV/bin/python" -m pytest -m "gpu or tensorrt" -rA --junitxml="$OUT/gpu-tests.xml" > "$OUT/gpu-tests.log" 2>&1
status "GPU and TensorRT tests" $? "$OUT/gpu-tests.log"
"$VENV/bin/python" -m pytest -q -rs --junitxml="$OUT/all-tests.xml" > "$OUT/all-tests.log" 2>&1
status "whole test suite (gpu extra)" $? "$OUT/all-tests.log"

MODEL=s3f_edge/assets/default_model/model.keras
DATA=${DATA:-${S3F_EDGE_DATA:+$S3F_EDGE_DATA/brain_tumor_mri}}
CALIB=samples/brain_mri/train
[[ -n $DATA && -d $DATA/train ]] && CALIB=$DATA/train
# Each engine is calibrated on its own outputs over the bundled model's validation images (the brain MRI
# dataset); without it, the model's calibration is copied, and the sidecars say so.
GUARANTEES=(--copy-calibration)
[[ -n $DATA && -d $DATA/train ]] && GUARANTEES=(--data "$DATA")
ENGINES=()
for precision in fp32 fp16 int8; do
  "$S3F" export "$MODEL" --out "$OUT/export-$precision" --precision "$precision" --calib "$CALIB" --trt \
    --trt-batch 1,8,32 --overwrite "${GUARANTEES[@]}" > "$OUT/export-$precision.log" 2>&1
  code=$?
  status "export --trt --precision $precision" $code "$OUT/export-$precision.log"
  [[ $code == 0 ]] && ENGINES+=("$OUT/export-$precision/model.$precision.engine")
done
ONNX=("$OUT/export-fp32/model.onnx")
[[ -f $OUT/export-fp16/model.fp16.onnx ]] && ONNX+=("$OUT/export-fp16/model.fp16.onnx")
[[ -f $OUT/export-int8/model.int8.onnx ]] && ONNX+=("$OUT/export-int8/model.int8.onnx")
"$S3F" bench "$MODEL" "${ONNX[@]}" "${ENGINES[@]}" --backends keras,onnx-cpu,onnx-cuda,onnx-trt,trt \
  --batch-sizes 1,8,32 --duration 5 --json "$OUT/bench.json" --overwrite > "$OUT/bench.log" 2>&1
status "bench (every backend)" $? "$OUT/bench.log"
TEST=samples/brain_mri/test
[[ -n $DATA && -d $DATA/test ]] && TEST=$DATA/test
"$S3F" matrix "$MODEL" "$TEST" --calib "$CALIB" --trt --out "$OUT/matrix" --overwrite > "$OUT/matrix.log" 2>&1
status "matrix (accuracy x speed, TensorRT engines included)" $? "$OUT/matrix.log"
if [[ -n $DATA && -d $DATA/test ]]; then
  for engine in "${ENGINES[@]}"; do
    "$S3F" evaluate "$engine" "$DATA/test" --out "$OUT/evaluate-$(basename "$engine")" --overwrite \
      > "$OUT/evaluate-$(basename "$engine").log" 2>&1
    status "evaluate $(basename "$engine") on $DATA/test" $? "$OUT/evaluate-$(basename "$engine").log"
  done
fi

# Ray with GPU actors: the same rows as one machine, for an engine (read from its sidecar by the driver) and ONNX.
for model in "${ENGINES[0]:-}" "$OUT/export-fp32/model.onnx"; do
  [[ -n $model && -f $model ]] || continue
  name=$(basename "$model")
  log="$OUT/infer-ray-$name.log"
  "$S3F" infer "$TEST" --recursive --model "$model" --out "$OUT/infer-$name.csv" --overwrite --quiet > "$log" 2>&1 &&
  "$S3F" infer "$TEST" --recursive --model "$model" --out "$OUT/infer-ray-$name.csv" --overwrite --quiet \
    --ray --ray-actors 1 --ray-gpus 1 >> "$log" 2>&1 &&
  "$VENV/bin/python" - "$OUT/infer-$name.csv" "$OUT/infer-ray-$name.csv" >> "$log" 2>&1 <<'PY'
import csv, sys
here, there = ([row for row in csv.DictReader(open(path, newline=""))] for path in sys.argv[1:3])
assert [r["path"] for r in here] == [r["path"] for r in there], "different files"
for mine, theirs in zip(here, there):
    assert (mine["status"], mine["predicted_class"]) == (theirs["status"], theirs["predicted_class"]), mine["path"]
    for column in [c for c in mine if c.startswith("prob_")]:
        assert abs(float(mine[column] or 0) - float(theirs[column] or 0)) <= 1e-3, (mine["path"], column)
print(f"infer --ray rows = infer rows: {len(here)} files")
PY
  status "infer --ray --ray-gpus 1 ($name) = infer on one machine" $? "$log"
done

{
  echo "# s3f-edge GPU check, $(date -u +%Y-%m-%d)"
  echo
  echo '```'
  cat "$OUT/machine.txt"
  echo '```'
  echo
  echo "| step | exit code | log |"
  echo "|---|---|---|"
  cat "$OUT/steps.md"
  echo
  echo "## matrix"
  cat "$OUT/matrix/matrix.md" 2>/dev/null || echo "(no matrix: see $OUT/matrix.log)"
  echo
  echo "## bench"
  echo '```'
  cat "$OUT/bench.log"
  echo '```'
  echo
  echo "## GPU tests"
  echo '```'
  tail -40 "$OUT/gpu-tests.log"
  echo '```'
} > "$REPORT"
echo "report: $REPORT"
