"""Multi-worker training for real: two worker processes on localhost, MultiWorkerMirroredStrategy."""
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from s3f_edge.errors import InputError
from s3f_edge.train.distribute import cluster_from_tf_config, is_chief_task


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def run_two_workers(data_dirs, run_dir, scratch, epochs: int) -> list[tuple[int, str]]:
    """Start one `s3f-edge train --strategy multiworker` per data dir; (exit code, output) of each."""
    hosts = [f"localhost:{free_port()}", f"localhost:{free_port()}"]
    workers = []
    for index, data_dir in enumerate(data_dirs):
        command = [sys.executable, "-m", "s3f_edge.cli", "train", str(data_dir), "--out", str(run_dir),
                   "--strategy", "multiworker", "--image-size", "32", "--batch-size", "8", "--lr", "1e-3",
                   "--epochs", str(epochs), "--val-fraction", "0.25", "--workers", "2", "--quiet"]
        env = {**os.environ, "TMPDIR": str(scratch), "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    try:
        for worker in workers:
            output = worker.communicate(timeout=420)[0]
            results.append((worker.returncode, output))
        return results
    finally:
        for worker in workers:
            worker.kill()


def test_two_workers_train_one_model_in_step(tmp_path, sample_dir):
    run_dir, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    results = run_two_workers([sample_dir, sample_dir], run_dir, scratch, epochs=6)
    for index, (code, output) in enumerate(results):
        assert code == 0, f"worker {index} failed:\n{output[-3000:]}"
    outputs = [output for _, output in results]

    # Both took part: each trained on its own half of every global batch, and they ended with the same weights.
    reports = [re.search(r"worker (\d)/2: trained on (\d+) images; weights sha256 ([0-9a-f]{64})", out)
               for out in outputs]
    assert all(reports), outputs
    assert sorted(r.group(1) for r in reports) == ["1", "2"]
    # 36 training images, global batch 8 -> 5 steps of 4 images per worker per epoch, 6 epochs.
    assert [int(r.group(2)) for r in reports] == [120, 120]
    assert reports[0].group(3) == reports[1].group(3)

    # One model is saved, by the chief; the other worker left nothing behind.
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.keras")) == \
        [run_dir.relative_to(tmp_path) / "last.keras", run_dir.relative_to(tmp_path) / "model.keras"]
    assert list(scratch.iterdir()) == []
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["distribution"]["workers"] == 2 and metrics["distribution"]["replicas"] == 2
    assert metrics["distribution"]["weights_sha256"] == reports[0].group(3)
    assert metrics["test"]["count"] == 24
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row["loss"]) for row in rows]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert all(float(row["learning_rate_used"]) > 0 for row in rows)  # the custom loop calls on_epoch_begin


def test_workers_that_see_different_pixels_stop_with_a_clear_error(tmp_path, sample_dir):
    import cv2

    # Same file names and counts (so the same number of steps), but worker 2's images are inverted:
    # its validation scores differ, and both workers must stop rather than silently diverge or hang.
    inverted = tmp_path / "inverted"
    shutil.copytree(sample_dir, inverted, ignore=shutil.ignore_patterns("*.md", "*.csv"))
    for path in inverted.rglob("*.jpg"):
        cv2.imwrite(str(path), 255 - cv2.imread(str(path)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    results = run_two_workers([sample_dir, inverted], tmp_path / "run", scratch, epochs=1)
    for code, output in results:
        assert code == 1 and "workers reached different selection" in output, output[-3000:]


def test_tf_config_errors_say_how_to_fix_them():
    with pytest.raises(InputError, match="needs TF_CONFIG"):
        cluster_from_tf_config({})
    with pytest.raises(InputError, match="not a valid cluster"):
        cluster_from_tf_config({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, '
                                             '"task": {"type": "worker", "index": 3}}'})
    with pytest.raises(InputError, match="not a valid cluster"):
        cluster_from_tf_config({"TF_CONFIG": "not json"})
    cluster, kind, index = cluster_from_tf_config(
        {"TF_CONFIG": '{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}'})
    assert (kind, index) == ("worker", 0) and not is_chief_task(cluster, kind, index)
    assert is_chief_task({"worker": ["a:1", "b:1"]}, "worker", 0)
