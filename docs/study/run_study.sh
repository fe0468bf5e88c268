#!/usr/bin/env bash
# The issue-7 study: every model under one budget, one after another, logs and run directories in
# $RUNS. Re-running skips runs whose metrics.json exists and resumes interrupted ones.
#   bash docs/study/run_study.sh [RUNS]        (defaults to ./runs/study)
#   SEED=1 bash docs/study/run_study.sh RUNS   another seed: run directories get a -seed1 suffix
set -uo pipefail
RUNS=${1:-runs/study}
DATA=${DATA:-../shared/data}
S3F=${S3F:-.venv/bin/s3f-edge}
DUPLICATES=docs/brain_mri_test_duplicates.txt
SEED=${SEED:-0}
SUFFIX=$([[ $SEED == 0 ]] || echo "-seed$SEED")
mkdir -p "$RUNS"

# Brain MRI: 64x64, 20 epochs (about 25 minutes each on a 2-core CPU). The LR plateau patience is
# shortened to 3 epochs (the preset's 20 would never fire) and early stopping is off, for all four.
BRAIN=(--preset brisc2025 --image-size 64 --epochs 20 --lr-patience 3 --patience 100 --seed "$SEED")
# BUSI: 128x128, SN2 (the preset), 30 epochs.
BUSI=(--preset busi --image-size 128 --epochs 30 --lr-patience 5 --patience 100 --seed "$SEED")

run() {  # name, dataset dir, then train options
  local name=$1$SUFFIX data=$2; shift 2
  local dir="$RUNS/$name"
  if [[ -f "$dir/metrics.json" ]]; then echo "skip $name (done)"; return; fi
  local start=$SECONDS
  if [[ -f "$dir/state.json" ]]; then
    "$S3F" train "$data" --resume "$dir" --quiet >> "$RUNS/$name.log" 2>&1
  else
    "$S3F" train "$data" "$@" --out "$dir" --quiet > "$RUNS/$name.log" 2>&1
  fi
  echo "$name $((SECONDS - start)) s" >> "$RUNS/wall_times.txt"
  if [[ $data == *brain_tumor_mri ]]; then
    "$S3F" evaluate "$dir/model.keras" "$data/test" --exclude "$DUPLICATES" \
      --out "$dir/evaluate-dedup" >> "$RUNS/$name.log" 2>&1
  fi
}

run brain-s3f-bilinear "$DATA/brain_tumor_mri" "${BRAIN[@]}" --model s3f --fusion bilinear
run brain-baseline     "$DATA/brain_tumor_mri" "${BRAIN[@]}" --model baseline
run brain-s3f-concat   "$DATA/brain_tumor_mri" "${BRAIN[@]}" --model s3f --fusion concat
run brain-spectral     "$DATA/brain_tumor_mri" "${BRAIN[@]}" --model spectral
run busi-s3f-concat    "$DATA/busi" "${BUSI[@]}" --model s3f --fusion concat
run busi-baseline      "$DATA/busi" "${BUSI[@]}" --model baseline
