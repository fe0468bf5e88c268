#!/usr/bin/env bash
# Run COMMAND while the study is stopped (SIGSTOP to the driver's whole process group: the training running
# now, and the driver, so that it starts no new run), so that benchmarks get a quiet CPU and the study loses
# no work; then let the study go on (SIGCONT). Pauses never overlap (a lock): a second one waits for the
# first. The pause is written to RUNS/wall_times.txt as a negative entry for the run it stopped, so
# table.py's wall times leave it out.
#   bash research/pause.sh RUNS COMMAND [ARG...]
set -uo pipefail
RUNS=${1:?usage: pause.sh RUNS COMMAND [ARG...]}
shift
exec 9> "$RUNS/.pause.lock"
flock 9
driver=$(pgrep -f "run_study.sh $RUNS( |$)" | head -1)
group=${driver:+$(ps -o pgid= -p "$driver" | tr -d ' ')}
name=$(pgrep -af "s3f-edge (train|evaluate) .*$RUNS/" | grep -o "$RUNS/[^/ ]*" | head -1 | xargs -r basename)
[[ -n $group ]] && kill -STOP -- "-$group"
start=$SECONDS
"$@"
status=$?
if [[ -n $group ]]; then
  kill -CONT -- "-$group"
  [[ -n $name ]] && echo "$name -$((SECONDS - start)) (paused)" >> "$RUNS/wall_times.txt"
fi
exit $status
