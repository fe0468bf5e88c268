"""The driver side of `infer --ray` (the inference loop with ``cluster.RayExecutor``) against a stand-in for
Ray Data that answers batches with the real actor class in this process and misbehaves on purpose: a batch
delivered twice (an actor that died after answering), a batch never delivered, an actor with another model file,
a cluster slow to start. These are the Ray faults a two-node test cluster cannot provoke on demand;
tests/test_cluster.py runs real Ray."""
from __future__ import annotations

import shutil
import threading
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from s3f_edge.errors import BackendError, InputError
from s3f_edge.results import read_journal
from s3f_edge.runtime import cluster
from s3f_edge.runtime.formats import load_predictor
from s3f_edge.runtime.infer import (
    ClusterOptions,
    InferOptions,
    answer_planned,
    finish_inference,
    plan_inference,
    run_inference,
)
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parent.parent
MODEL = DEFAULT_MODEL_DIR / "model.onnx"


class StandInDataset:
    """``from_items(...).map_batches(...)``: batches of ``size`` items, answered by the mapped class, delivered
    in the order ``deliver`` gives (a list of batch indices, repeats and gaps allowed)."""

    def __init__(self, items: list[dict], deliver, until):
        self.items, self.deliver, self.until = items, deliver, until

    def map_batches(self, callable_class, batch_size: int, **options):
        self.answerer = callable_class(**options["fn_constructor_kwargs"])
        self.batch_size = batch_size
        return self

    def iter_batches(self, **_):
        batches = [self.items[start:start + self.batch_size] for start in range(0, len(self.items), self.batch_size)]
        if self.until is not None:  # a cluster slow to start: nothing until the event (bounded, for a broken test)
            assert self.until.wait(timeout=60), "the driver never said it was waiting"
        for index in self.deliver(len(batches)):
            chunk = batches[index]
            yield self.answerer({"path": np.array([item["path"] for item in chunk], dtype=object),
                                 "read": np.array([item["read"] for item in chunk], dtype=object)})


def stand_in_ray(deliver=range, until: threading.Event | None = None):
    return SimpleNamespace(data=SimpleNamespace(
        from_items=lambda items, override_num_blocks: StandInDataset(items, deliver, until),
        ActorPoolStrategy=lambda size: ("actor pool", size)))


@pytest.fixture()
def folder(tmp_path) -> Path:
    target = tmp_path / "images"
    target.mkdir()
    for image in sorted((REPO / "samples" / "brain_mri" / "test").rglob("*.jpg"))[:12]:
        shutil.copy(image, target / f"{image.parent.name}-{image.name}")
    (target / "empty.png").write_bytes(b"")
    return target


def run(ray, folder: Path, out: Path, model: Path = MODEL, log=None, notice_seconds: float = 60.0):
    """The loop with a Ray executor on ``ray`` (already joined: the stand-in has no cluster to start)."""
    predictor = load_predictor(MODEL)
    options = InferOptions(folder, out, model=model, batch_size=4, workers=1, progress=False,
                           cluster=ClusterOptions("auto", actors=2))
    plan = plan_inference(options, predictor)
    executor = cluster.RayExecutor(predictor, model, options, log=log, ray=ray)
    executor.wait_notice_seconds = notice_seconds
    executor.session = lambda plan: nullcontext()  # the stand-in has no cluster to start or check
    answer_planned(plan, executor, progress=False)
    return plan, predictor


def test_a_batch_delivered_twice_gives_one_row_per_file_and_counts_once(folder, tmp_path):
    out = tmp_path / "r.csv"
    plan, predictor = run(stand_in_ray(lambda n: [0, 1, 1, 2, 0, 3]), folder, out)
    journal = read_journal(plan.journal)[1]
    assert len(journal) == 13 == len({row["path"] for row in journal})
    summary = finish_inference(plan, predictor)
    assert summary.succeeded + summary.refused + summary.failed == 13 and summary.failed == 1
    assert len(out.read_text(encoding="utf-8").splitlines()) == 14


def test_a_batch_never_delivered_is_an_error_and_the_rows_answered_are_kept(folder, tmp_path):
    out = tmp_path / "r.csv"
    with pytest.raises(BackendError, match="4 of 13 file.s. unanswered.*--resume"):
        run(stand_in_ray(lambda n: [0, 2, 3]), folder, out)
    journal = tmp_path / ".r.csv.partial.jsonl"
    assert len(read_journal(journal)[1]) == 9 and not out.exists()


def test_an_actor_with_another_model_file_stops_the_run(folder, tmp_path):
    import onnx
    other = tmp_path / "other.onnx"
    changed = onnx.load(str(MODEL))
    changed.doc_string = "the same graph in another file: another sha256"
    onnx.save(changed, str(other))
    with pytest.raises(InputError, match=f"differs from the driver's.*{other}"):
        run(stand_in_ray(), folder, tmp_path / "r.csv", model=other)


def test_the_driver_says_so_when_no_row_comes_for_a_while(folder, tmp_path):
    said, first_rows = [], threading.Event()

    def log(line):
        said.append(line)
        first_rows.set()  # the stand-in cluster answers only once the driver has said it waits

    run(stand_in_ray(until=first_rows), folder, tmp_path / "slow.csv", log=log, notice_seconds=0.05)
    assert len(said) == 1 and "waiting for free CPUs or GPUs" in said[0]
    said.clear()
    plan, _ = run(stand_in_ray(), folder, tmp_path / "fast.csv", log=said.append, notice_seconds=3600)
    assert said == [] and plan.summary.answered == 13


class StandInSession(SimpleNamespace):
    """``ray.init``, ``nodes``, ``shutdown`` and ``exceptions`` recorded, around a stand-in dataset."""

    class RayError(Exception):
        pass

    def __init__(self, deliver=range, fail: bool = False):
        super().__init__(calls=[], exceptions=SimpleNamespace(RayError=self.RayError, AuthenticationError=()))
        self.data = stand_in_ray(deliver).data
        if fail:
            self.data.from_items = lambda items, override_num_blocks: (_ for _ in ()).throw(self.RayError("lost"))
        self.data.DataContext = SimpleNamespace(get_current=lambda: SimpleNamespace())

    def init(self, **options):
        self.calls.append("init")

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 8.0}}]

    def shutdown(self):
        self.calls.append("shutdown")


@pytest.mark.parametrize("fail", [False, True], ids=["answers", "fails"])
def test_ray_is_always_left_after_the_run(folder, tmp_path, fail):
    predictor = load_predictor(MODEL)
    ray = StandInSession(fail=fail)
    options = InferOptions(folder, tmp_path / "r.csv", model=MODEL, batch_size=4, workers=1, progress=False,
                           cluster=ClusterOptions("auto", actors=2))
    executor = cluster.RayExecutor(predictor, MODEL, options, ray=ray)
    if fail:
        with pytest.raises(BackendError, match="the Ray job failed .lost.; no file was answered.*cluster is sound"):
            run_inference(options, predictor, executor)
        assert not (tmp_path / ".r.csv.partial.jsonl").exists()
    else:
        assert run_inference(options, predictor, executor).answered == 13
    assert ray.calls == ["init", "shutdown"]
