"""The disk cache of decoded images: same pixels as decoding into memory, reused, invalidated, streamed."""
import os
import shutil

import numpy as np
import pytest

from s3f_edge.data import cache as cache_module
from s3f_edge.data.cache import load_split_cached
from s3f_edge.data.folders import discover, load_split
from s3f_edge.data.preprocess import Preprocessing

CONTRACT = Preprocessing(height=32, width=32, channels=1)


@pytest.fixture()
def data_copy(tmp_path, sample_dir):
    root = tmp_path / "data"
    shutil.copytree(sample_dir / "train", root / "train")
    (root / "train" / "glioma" / "broken.jpg").write_bytes(b"not an image")
    return root


def test_cache_holds_the_same_pixels_and_failures_as_memory(data_copy, tmp_path):
    split = discover(data_copy).train
    expected_x, expected_y, expected_failures = load_split(split, CONTRACT)
    images, labels, failures = load_split_cached(split, CONTRACT, tmp_path / "cache")
    assert isinstance(images, np.memmap) and not images.flags.writeable
    np.testing.assert_array_equal(images, expected_x)
    np.testing.assert_array_equal(labels, expected_y)
    assert [(p.name, r) for p, r in failures] == [(p.name, r) for p, r in expected_failures] and len(failures) == 1
    assert not list((tmp_path / "cache").glob("*.tmp*"))


def test_cache_is_reused_and_invalidated_by_a_changed_file(data_copy, tmp_path, monkeypatch):
    split = discover(data_copy).train
    first, _, _ = load_split_cached(split, CONTRACT, tmp_path / "cache")
    calls = []
    real_decode = cache_module.decode_split
    monkeypatch.setattr(cache_module, "decode_split", lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    again, _, _ = load_split_cached(split, CONTRACT, tmp_path / "cache")
    assert calls == [] and np.array_equal(first, again)
    changed = split.paths[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    load_split_cached(split, CONTRACT, tmp_path / "cache")
    assert calls == [1]
    load_split_cached(split, Preprocessing(height=24, width=24, channels=1), tmp_path / "cache")
    assert calls == [1, 1]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3


def test_pipeline_reads_every_cached_image_once_per_epoch(data_copy, tmp_path):
    from s3f_edge.train.pipeline import input_pipeline

    split = discover(data_copy).train
    images, labels, _ = load_split_cached(split, CONTRACT, tmp_path / "cache")
    seen = [(x, y) for x, y in input_pipeline(images, labels, batch_size=5, seed=0).as_numpy_iterator()]
    xs, ys = np.concatenate([x for x, _ in seen]), np.concatenate([y for _, y in seen])
    assert xs.shape == images.shape and xs.dtype == np.float32
    order = np.lexsort(xs.reshape(len(xs), -1).T)
    expected = np.lexsort(np.asarray(images).reshape(len(images), -1).T)
    np.testing.assert_array_equal(xs[order], images[expected])
    np.testing.assert_array_equal(ys[order], labels[expected])


def test_training_from_the_disk_cache(tmp_path, sample_dir):
    import json

    from s3f_edge.train.trainer import TrainOptions, train

    run_dir = tmp_path / "run"
    train(TrainOptions(data_dir=str(sample_dir), out_dir=str(run_dir), epochs=2, image_size=(32, 32), batch_size=8,
                       val_fraction=0.25, workers=2, verbose=0, cache="disk", cache_dir=str(tmp_path / "cache")))
    assert len(list((tmp_path / "cache").glob("*.images.npy"))) == 3  # train, validation, test
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["count"] == 24 and metrics["validation"]["count"] == 12
