#!/usr/bin/env bash
# Run COMMAND while the study's training is stopped (SIGSTOP), so that benchmarks get a quiet CPU and the
# study loses no work; then let the study go on (SIGCONT). The pause is written to RUNS/wall_times.txt as a
# negative entry for the run that was stopped, so table.py's wall times leave it out.
#   bash docs/study/pause.sh RUNS COMMAND [ARG...]
set -uo pipefail
RUNS=${1:?usage: pause.sh RUNS COMMAND [ARG...]}
shift
pids=$(pgrep -f "s3f-edge (train|evaluate) .*$RUNS/" || true)
name=$(ps -o args= -p $pids 2>/dev/null | grep -o "$RUNS/[^/ ]*" | head -1 | xargs -r basename)
[[ -n $pids ]] && kill -STOP $pids
start=$SECONDS
"$@"
status=$?
if [[ -n $pids ]]; then
  kill -CONT $pids
  echo "$name -$((SECONDS - start)) (paused)" >> "$RUNS/wall_times.txt"
fi
exit $status
