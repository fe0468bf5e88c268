"""`infer --ray` on a real two-node Ray cluster started on this machine (`ray start --head` plus a second
`ray start --address`, each with one CPU), against the single-machine `infer` on the same folder; a worker
actor killed with SIGKILL mid-run; a driver killed mid-run and resumed."""
import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3f_edge.cli import main
from s3f_edge.results import read_journal
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR
from s3f_edge.testing import RAY_ENV

REPO = Path(__file__).resolve().parent.parent
MODEL = DEFAULT_MODEL_DIR / "model.onnx"
RAY = Path(sys.executable).parent / "ray"
HOSTILE = "<img src=x onerror=alert(1)>.png"
UNICODE = "übersicht 画像.png"

# Under `make test` (RAY_ENV set) nothing here skips: a missing or busy Ray fails instead of hiding a broken --ray.
REQUIRED = bool(os.environ.get(RAY_ENV))
pytestmark = pytest.mark.skipif(not RAY.exists() and not REQUIRED,
                                reason="ray is not installed (the cluster extra; make installs it)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The token every process of the test cluster shares: made here, never read from a home directory (Ray would
# otherwise look for ~/.ray/auth_token, which only a machine that once ran `ray get-auth-token --generate` has).
TOKEN_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def ray_environment() -> dict:
    # `ray start --head` turns token authentication on; drivers and other nodes must then send the token.
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_token(tmp_path_factory):
    """A fresh token file for this module's cluster, named by RAY_AUTH_TOKEN_PATH while the module runs."""
    path = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    saved = {name: os.environ.get(name) for name in TOKEN_VARIABLES}
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    os.environ["RAY_AUTH_MODE"] = "token"
    reset_ray_auth()
    yield path
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reset_ray_auth()


def reset_ray_auth() -> None:
    """Make a Ray already imported in this process read the authentication settings again (it caches them)."""
    if sys.modules.get("ray") is not None:
        from ray._private.authentication_test_utils import reset_auth_token_state

        reset_auth_token_state()


def ray_processes() -> list[str]:
    """Command lines of the Ray servers running on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and ("/raylet" in command.split(" ")[0] or "/gcs_server" in command.split(" ")[0]):
            found.append(command[:120])
    return found


@pytest.fixture(scope="module")
def cluster(ray_token) -> str:
    """The address of a running two-node cluster, stopped (with every Ray process here) afterwards."""
    if ray_processes():  # `ray stop` below would stop them too
        (pytest.fail if REQUIRED else pytest.skip)(
            f"Ray already runs on this machine ({ray_processes()[0]}...): stop it with `ray stop` first")
    env = ray_environment()
    port = free_port()
    head = subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                           "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=180)
    assert head.returncode == 0, head.stdout + head.stderr
    address = next(line.split("--address=")[1].strip(" '") for line in head.stdout.splitlines()
                   if "ray start --address=" in line)
    worker = subprocess.run([str(RAY), "start", f"--address={address}", "--num-cpus=1",
                             '--resources={"second_node": 1}', "--disable-usage-stats"],
                            env=env, capture_output=True, text=True, timeout=180)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    check = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    for _ in range(30):
        alive = subprocess.run([sys.executable, "-c", check, address], env=env, capture_output=True, text=True)
        if alive.stdout.strip().endswith("2"):
            break
        time.sleep(1)
    else:
        pytest.fail(f"the second node never joined: {alive.stdout} {alive.stderr}")
    yield address
    subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """Sample images plus files that cannot be answered or have awkward names."""
    folder = tmp_path_factory.mktemp("cluster") / "batch"
    folder.mkdir()
    for image in sorted((REPO / "samples" / "brain_mri" / "test").rglob("*.jpg")):
        shutil.copy(image, folder / f"{image.parent.name}-{image.name}")
    for image in sorted((REPO / "samples" / "ultrasound" / "images").glob("*.png")):
        shutil.copy(image, folder / f"ultrasound-{image.name}")
    first = sorted(folder.glob("*.jpg"))[0]
    shutil.copy(first, folder / HOSTILE)
    shutil.copy(first, folder / UNICODE)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def many_files(folder: Path, count: int) -> Path:
    """``count`` hard links to the sample images (copies on disk, no space)."""
    folder.mkdir()
    samples = sorted((REPO / "samples" / "brain_mri").rglob("*.jpg"))
    for index in range(count):
        os.link(samples[index % len(samples)], folder / f"{index:05d}-{samples[index % len(samples)].name}")
    return folder


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def infer_process(folder: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "s3f-edge"), "infer", str(folder), "--model", str(MODEL), "--out",
               str(out), "--quiet", *extra]
    return subprocess.Popen(command, env=ray_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal_lines(out: Path) -> int:
    """The rows journaled so far (its first line describes the run)."""
    journal = out.with_name(f".{out.name}.partial.jsonl")
    return len(read_journal(journal)[1]) if journal.exists() else 0


def ray_actor_pids() -> dict[int, int]:
    """{pid: parent pid} of the Ray Data map actors alive on this machine (the parent is the node's raylet)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if command.startswith("ray::MapWorker") or "ray::MapWorker(MapBatches(RayAnswerer))" in command:
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_rows_on_the_cluster_are_the_rows_of_one_machine(cluster, batch, tmp_path, monkeypatch):
    here, there = tmp_path / "here.csv", tmp_path / "cluster.csv"
    monkeypatch.chdir(batch.parent)  # relative paths: rows name them as given, actors read them absolute
    model = os.path.relpath(MODEL)
    local = CliRunner().invoke(main, ["infer", batch.name, "--model", model, "--out", str(here), "--quiet"])
    assert local.exit_code == 3, local.output  # the corrupt, empty and text files
    remote = CliRunner().invoke(main, ["infer", batch.name, "--model", model, "--out", str(there), "--quiet",
                                       "--ray", cluster, "--ray-actors", "2", "--batch-size", "8"])
    assert remote.exit_code == 3, remote.output + remote.stderr
    expected, got = read(here), read(there)
    assert [r["path"] for r in got] == [r["path"] for r in expected]  # one row per file, same order
    assert got[0]["path"].startswith(batch.name + os.sep)
    assert {Path(r["path"]).name for r in got} >= {HOSTILE, UNICODE, "corrupt.png", "empty.jpg", "notes.txt"}
    for mine, theirs in zip(expected, got):
        for column in ("status", "reason", "predicted_class", "ood_threshold", "model", "model_sha256"):
            assert theirs[column] == mine[column], (mine["path"], column)
        for column in [c for c in mine if c.startswith("prob_")] + ["ood_score"]:
            if mine[column] == "":
                assert theirs[column] == ""
            else:
                assert abs(float(theirs[column]) - float(mine[column])) <= 1e-3, (mine["path"], column)
    assert {r["status"] for r in got} == {"ok", "refused", "error"}


def test_a_worker_actor_killed_mid_run_loses_no_row(cluster, tmp_path):
    folder = many_files(tmp_path / "many", 1500)
    out = tmp_path / "r.csv"
    driver = infer_process(folder, out, "--ray", cluster, "--ray-actors", "2", "--batch-size", "4")
    try:
        deadline = time.time() + 240
        while journal_lines(out) < 40 and driver.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        actors = ray_actor_pids()
        assert driver.poll() is None, "the run ended before an actor could be killed: give it more files"
        assert len(set(actors.values())) == 2, f"the actors should run on both nodes: {actors}"
        victim = min(actors)
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=600)
    finally:
        driver.kill()
    assert driver.returncode == 0, stdout + stderr
    rows = read(out)
    assert len(rows) == 1500 and len({r["path"] for r in rows}) == 1500
    ok, refused, failed = map(int, re.search(r"(\d+) ok, (\d+) refused, (\d+) failed", stdout).groups())
    assert (ok + refused, failed) == (1500, 0), stdout  # a batch Ray ran again is not counted twice
    assert {r["status"] for r in rows} <= {"ok", "refused"}
    assert victim not in ray_actor_pids()


def test_a_killed_driver_resumes_where_it_stopped(cluster, tmp_path):
    folder = many_files(tmp_path / "many", 1200)
    out = tmp_path / "r.csv"
    driver = infer_process(folder, out, "--ray", cluster, "--batch-size", "4")
    deadline = time.time() + 240
    while journal_lines(out) < 100 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before the driver could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    answered = journal_lines(out)
    assert 100 <= answered < 1200 and not out.exists()
    resumed = CliRunner().invoke(main, ["infer", str(folder), "--model", str(MODEL), "--out", str(out), "--quiet",
                                        "--ray", cluster, "--resume"])
    assert resumed.exit_code == 0, resumed.output + resumed.stderr
    assert f"{answered} already done" in resumed.output  # only the files the killed run had not answered
    rows = read(out)
    assert len(rows) == 1200 and len({r["path"] for r in rows}) == 1200


def test_ray_options_need_ray_and_explain_stays_local(tmp_path):
    sample = REPO / "samples" / "brain_mri" / "test"
    for extra in (["--ray-actors", "3"], ["--ray", "--explain", str(tmp_path / "cams")]):
        result = CliRunner().invoke(main, ["infer", str(sample), "--recursive", "--out", str(tmp_path / "r.csv"),
                                           *extra])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    before = CliRunner().invoke(main, ["infer", "--ray", str(sample), "--recursive", "--out", str(tmp_path / "r.csv")])
    assert before.exit_code == 2 and "put --ray after FOLDER" in before.stderr, before.output
    assert not (tmp_path / "r.csv").exists()


def test_without_ray_the_error_names_the_extra(tmp_path):
    probe = ("import sys; sys.modules['ray'] = None\n"
             "from s3f_edge.cli import main\n"
             "main(sys.argv[1:], prog_name='s3f-edge')")
    done = subprocess.run([sys.executable, "-c", probe, "infer", str(REPO / "samples" / "brain_mri" / "test"),
                           "--recursive", "--ray", "--out", str(tmp_path / "r.csv"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "s3f-edge[cluster]" in lines[0], done.stderr
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("address, says, code", [("127.0.0.1:{port}", "nothing answers", 1),
                                                 ("nohost", "is not an address", 2)])
def test_an_address_with_no_cluster_fails_fast_in_one_line(tmp_path, address, says, code):
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["infer", str(REPO / "samples" / "brain_mri" / "test"), "--recursive", "--quiet",
                                       "--out", str(tmp_path / "r.csv"), "--ray", address.format(port=free_port())])
    assert result.exit_code == code, result.output
    assert time.perf_counter() - started < 60  # Ray alone would keep retrying for minutes
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert not (tmp_path / "r.csv").exists()


def test_a_tensorrt_engine_is_known_from_its_sidecar_and_needs_gpu_actors(tmp_path):
    """The driver of a cluster run seldom has the engine's GPU: it reads the sidecar, and only GPU actors load it."""
    from s3f_edge.runtime.cluster import driver_model
    from s3f_edge.runtime.formats import load_predictor

    bundled = load_predictor(MODEL)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"an engine built for a GPU this machine does not have")
    (tmp_path / "model.engine.json").write_text(json.dumps({"model_metadata": bundled.metadata, "precision": "fp16"}))
    known = driver_model(engine)
    assert known.class_names == bundled.class_names and known.contract == bundled.contract
    assert known.ood_threshold == bundled.ood_threshold and known.name == "model.engine"
    assert known.sha256 != bundled.sha256 and len(known.sha256) == 64
    result = CliRunner().invoke(main, ["infer", str(REPO / "samples" / "brain_mri" / "test"), "--recursive", "--quiet",
                                       "--model", str(engine), "--out", str(tmp_path / "r.csv"), "--ray"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--ray-gpus 1" in lines[0], result.stderr
    assert not (tmp_path / "r.csv").exists()


def test_actors_that_fit_count_whole_actors_per_alive_node():
    from s3f_edge.runtime.cluster import actors_that_fit

    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 3.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert actors_that_fit(nodes, 1.0, 0.0) == 11
    assert actors_that_fit(nodes, 2.0, 0.0) == 5  # 4 + 1: an actor never spans two nodes
    assert actors_that_fit(nodes, 1.0, 1.0) == 2  # the GPUs of the one GPU node
    assert actors_that_fit(nodes, 0.5, 0.5) == 4
    assert actors_that_fit(nodes, 0.1, 0.0) == 110


def test_a_cluster_too_small_for_the_actors_is_an_error_not_a_wait(cluster, tmp_path):
    out = tmp_path / "r.csv"
    for extra, says in ((["--ray-actors", "3"], "can hold 2 actor(s)"), (["--ray-gpus", "1"], "can hold 0 actor(s)")):
        started = time.perf_counter()
        result = CliRunner().invoke(main, ["infer", str(REPO / "samples" / "brain_mri" / "test"), "--recursive",
                                           "--quiet", "--out", str(out), "--ray", cluster, *extra])
        assert result.exit_code == 1, result.output
        assert time.perf_counter() - started < 60  # Ray alone would wait for the missing CPUs or GPUs for ever
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], result.stderr
        assert not out.exists() and not out.with_name(f".{out.name}.partial.jsonl").exists()


def test_ray_alone_starts_its_own_instance_even_beside_a_cluster(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster)  # plain ray.init() would join this cluster instead
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(main, ["infer", str(REPO / "samples" / "brain_mri" / "test"), "--recursive", "--quiet",
                                       "--out", str(out), "--ray", "--ray-actors", "1"])
    assert result.exit_code == 0, result.output + result.stderr
    assert len(read(out)) == 24
