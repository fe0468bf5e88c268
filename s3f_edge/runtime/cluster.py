"""`s3f-edge infer --ray`: the same inference, its decoding and prediction spread over a Ray cluster.

The file list becomes a Ray Data dataset; ``map_batches`` runs ``RayAnswerer``, a callable class that
loads the model once per actor and turns a batch of paths into result rows (decoding included, so
pixels never travel). The driver keeps everything that makes ``infer`` trustworthy on one machine: the
checks before any work, the journal written as batches arrive (a driver that dies loses nothing
already answered, and ``--resume`` continues), and the final output written once, sorted, atomically.
Ray restarts an actor that dies and retries its batches; rows are keyed by path, so a retried batch
never makes a second row.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from s3f_edge.dependencies import import_module
from s3f_edge.errors import BackendError, InputError
from s3f_edge.results import journal_has_rows, open_journal
from s3f_edge.runtime.formats import load_predictor, model_format
from s3f_edge.runtime.infer import (
    InferSummary,
    answer_images,
    decode_file,
    error_row,
    finish_inference,
    journal_removed_if_nothing_answered,
    plan_inference,
    record_rows,
)
from s3f_edge.runtime.predictor import Predictor, default_model
from s3f_edge.runtime.tensorrt_env import engine_metadata

LOCAL = "local"  # --ray without an address: start a Ray instance on this machine for the run
WAIT_NOTICE_SECONDS = 60  # with no row by then, say that the actors may be waiting for the cluster's resources


class RayAnswerer:
    """One Ray actor: loads the model once, then answers batches of paths with result rows.

    Args:
        model: the model file, at a path every node can read; None: the node's own bundled model.
        threshold: the refusal threshold the driver chose (None: refuse nothing).
        metadata: class names and preprocessing to use instead of the file's own (as ``load_predictor``).
        providers: ONNX Runtime providers in order of preference; None: the best on the node.
        workers: decoding threads inside the actor.
        threads: ONNX Runtime's threads, the CPUs Ray reserved for the actor.
    """

    def __init__(self, model: str | None, threshold: float | None, metadata: dict | None = None,
                 providers: list[str] | None = None, workers: int = 2, threads: int = 1):
        from s3f_edge.runtime.onnx_backend import INTRA_OP_THREADS_VARIABLE

        os.environ[INTRA_OP_THREADS_VARIABLE] = str(max(1, threads))
        self.predictor = load_predictor(model or default_model(), providers=providers, metadata=metadata)
        self.threshold = threshold
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def __call__(self, batch: dict) -> dict:
        """Rows (as JSON text) for a batch ``{"path": [...], "read": [...]}``: the path each row names, and the
        absolute path this node reads it from."""
        import numpy as np

        paths, reads = [str(p) for p in batch["path"]], [str(p) for p in batch["read"]]
        contract = self.predictor.contract
        decoded = list(self.pool.map(lambda read: decode_file(Path(read), contract), reads))
        rows = [error_row(path, self.predictor, file.error, file.fingerprint) for path, file in zip(paths, decoded)
                if file.error]
        good = [(path, file) for path, file in zip(paths, decoded) if not file.error]
        if good:
            rows += answer_images(self.predictor, [p for p, _ in good], [f.image for _, f in good], self.threshold,
                                  [f.fingerprint for _, f in good])
        return {"row": np.array([json.dumps(row, ensure_ascii=False) for row in rows], dtype=object)}


class EngineOnGpuNodes(Predictor):
    """A TensorRT engine as the driver knows it: its metadata, read from the sidecar without TensorRT or a GPU.

    The driver only decides rows (class names, threshold, sha256); the actors on the GPU nodes run the engine.
    """

    backend = "tensorrt"

    def __init__(self, path: Path, metadata: dict | None = None):
        super().__init__(path, engine_metadata(path, metadata))
        self.provider = "the cluster's GPU nodes"


def driver_model(path: str | Path, providers: list[str] | None = None, metadata: dict | None = None) -> Predictor:
    """The model as the driver of ``infer --ray`` needs it: its metadata, never run here.

    An ONNX file is opened on the CPU whatever ``providers`` say (they are the actors', and the driver may have no
    GPU). An engine runs only on the GPU (and TensorRT version) it was built for, which a cluster's driver seldom
    has, so for an engine the driver reads its sidecar instead; the actors load it on the GPU nodes.

    Args:
        path: the model file (.onnx, .keras, .engine or .plan).
        providers: the ONNX Runtime providers the actors will use (shown in the run's description only).
        metadata: class names and preprocessing overriding the file's own (as ``load_predictor``).

    Returns:
        A ``Predictor``: loaded, or for an engine one that knows its metadata and cannot predict.
    """
    found = model_format(path).name
    if found == "tensorrt":
        return EngineOnGpuNodes(Path(path), metadata)
    predictor = load_predictor(path, providers=["CPUExecutionProvider"] if found == "onnx" else None,
                               metadata=metadata)
    if found == "onnx":
        predictor.provider = ",".join(providers) if providers else "the best providers on each Ray node"
    return predictor


def address_problem(address: str) -> str | None:
    """What is wrong with ``address`` as written (None: nothing): ``LOCAL``, ``auto``, or host:port (a port from 1
    to 65535, optionally after ray://)."""
    if address in (LOCAL, "auto"):
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return (f"{address!r} is not an address; give host:port (the head node's GCS port, 6379 by default), or auto "
                "for the cluster this machine belongs to")
    return None


def local_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container or taskset may limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at ``host:port`` (Ray itself retries for long)."""
    problem = address_problem(address)
    if problem:
        raise InputError(f"--ray: {problem}")
    if address in (LOCAL, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise InputError(f"--ray {address}: nothing answers there ({error.strerror or error}); start the head node "
                         "with `ray start --head`, or check the host, the port and the firewall") from error


def _connect(ray, address: str, cpus: int | None) -> None:
    """Join the cluster at ``address`` (or start one here for ``LOCAL``), quietly."""
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
               "configure_logging": True}
    try:
        if address == LOCAL:
            ray.init(address="local", num_cpus=cpus, **options)  # never an instance RAY_ADDRESS names
        else:
            ray.init(address=address, **options)
    except getattr(ray.exceptions, "AuthenticationError", ()) as error:  # Ray 2.52 and later
        raise InputError(f"--ray {address}: the cluster refused this driver's token; set RAY_AUTH_MODE=token and "
                         "give the cluster's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) as on its nodes") from error
    except (ConnectionError, RuntimeError) as error:
        raise InputError(f"--ray {address}: cannot reach a Ray cluster there ({str(error).splitlines()[0]}); start "
                         "one with `ray start --head`, or give its address (host:port, or auto)") from error
    warnings.filterwarnings("ignore", module=r"ray\.")  # tuning hints meant for Ray Data's own users
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is the one bar, on the driver
    context.print_on_execution_start = False
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def actors_that_fit(nodes: list[dict], cpus: float, gpus: float) -> int:
    """How many actors of ``cpus`` CPUs and ``gpus`` GPUs the alive ``nodes`` (``ray.nodes()``) can hold at once."""
    fit = 0
    for node in nodes:
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        limits = [have.get("CPU", 0.0) / cpus] + ([have.get("GPU", 0.0) / gpus] if gpus > 0 else [])
        fit += int(min(limits) + 1e-9)
    return fit


def _check_room_here(actors: int, cpus: float, gpus: float) -> None:
    """Refuse, before starting Ray on this machine, actors that this machine's CPUs (and GPUs) cannot hold."""
    gpus_here = 0
    if gpus > 0:
        gpus_here = len([g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]) or len(
            list(Path("/dev").glob("nvidia[0-9]*")))
    fit = actors_that_fit([{"Alive": True, "Resources": {"CPU": float(local_cpus()), "GPU": float(gpus_here)}}],
                          cpus, gpus)
    if fit < actors:
        need = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus > 0 else "")
        raise InputError(f"this machine ({local_cpus()} CPUs{f', {gpus_here} GPUs' if gpus > 0 else ''}) can hold "
                         f"{fit} actor(s) of {need} each, not the {actors} asked for: lower --ray-actors or "
                         "--ray-cpus, or give --ray the address of a larger cluster")


def _check_room(ray, address: str, actors: int, cpus: float, gpus: float) -> None:
    """Refuse a run the cluster cannot hold: Ray would wait for the missing CPUs or GPUs for ever."""
    fit = actors_that_fit(ray.nodes(), cpus, gpus)
    if fit < actors:
        where = "this machine" if address == LOCAL else "the cluster's nodes"
        need = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus > 0 else "")
        raise InputError(f"{where} can hold {fit} actor(s) of {need} each, not the {actors} asked for: lower "
                         "--ray-actors, --ray-cpus or --ray-gpus, or start more nodes first")


def infer_folder_on_ray(folder: str | Path, predictor, model_path: str | Path, output: str | Path, *,
                        address: str = LOCAL, actors: int = 2, cpus_per_actor: float = 1.0,
                        gpus_per_actor: float = 0.0, batch_size: int = 32, recursive: bool = False,
                        workers: int = 2, resume: bool = False, progress: bool = True, overwrite: bool = False,
                        log=None, accept_ood: bool = False, ood_threshold: float | None = None,
                        metadata: dict | None = None, providers: list[str] | None = None) -> InferSummary:
    """``infer_folder`` with decoding and prediction on a Ray cluster: the same rows, checks and output.

    Args:
        folder: the files to classify, at a path every node can read (a shared file system).
        predictor: the model as the driver knows it (``driver_model``): its name, sha256, classes and threshold
            decide the rows.
        model_path: the same model's file, at a path every node can read.
        output: .csv, .jsonl or .json, as ``infer_folder``; its journal is written on the driver.
        address: ``LOCAL`` to start a Ray instance on this machine for the run, else a running cluster's address
            (host:port, or ``auto``).
        actors: model replicas (Ray actors), each loading the model once.
        cpus_per_actor: CPUs Ray reserves for each actor.
        gpus_per_actor: GPUs Ray reserves for each actor (e.g. 1 on GPU nodes; 0: CPU only).
        batch_size: images per model call.
        recursive: also classify the files of sub-folders.
        workers: decoding threads inside each actor.
        resume: continue an earlier run's output and journal (on one machine or a cluster).
        progress: show a progress bar on stderr.
        overwrite: replace an existing output.
        log: called with lines describing the run, after every check passed.
        accept_ood: never refuse.
        ood_threshold: refuse above this score instead of the model's own threshold.
        metadata: class names and preprocessing overriding the file's own (as given to ``load_predictor``).
        providers: ONNX Runtime providers for the actors; None: the best available on each node.

    Returns:
        The counts and timing (``InferSummary``).

    Raises:
        MissingDependencyError: Ray is not installed (the ``cluster`` extra).
        InputError: an invalid option, no file to classify, an output another model or folder wrote, no Ray
            cluster at ``address``, or an actor whose model file differs from the driver's.
        MissingFileError: ``folder`` is not a folder.
        OutputExistsError: the output exists and neither ``resume`` nor ``overwrite`` was given.
        OutputError: the output cannot be written.
    """
    if actors < 1 or cpus_per_actor <= 0 or gpus_per_actor < 0:
        raise InputError("--ray-actors must be at least 1, --ray-cpus above 0 and --ray-gpus at least 0")
    if model_format(model_path).name == "tensorrt" and gpus_per_actor <= 0:
        raise InputError(f"{Path(model_path).name} is a TensorRT engine, which runs on a GPU: add --ray-gpus 1 so that "
                         "its actors are placed on GPU nodes (or give the .onnx file to run on CPUs)")
    _check_reachable(address)
    if address == LOCAL:  # a Ray of more CPUs than the machine has would only crowd it: refuse before starting one
        _check_room_here(actors, cpus_per_actor, gpus_per_actor)
    ray = import_module("ray", "infer --ray", "cluster")
    import_module("ray.data", "infer --ray", "cluster")
    plan = plan_inference(folder, predictor, output, batch_size=batch_size, recursive=recursive, workers=workers,
                          resume=resume, overwrite=overwrite, accept_ood=accept_ood, ood_threshold=ood_threshold,
                          log=log)
    with journal_removed_if_nothing_answered(plan):
        if plan.files:
            _connect(ray, address, local_cpus() if address == LOCAL else None)
            try:
                _check_room(ray, address, actors, cpus_per_actor, gpus_per_actor)
                _drive(ray, plan, predictor, Path(model_path), actors, cpus_per_actor, gpus_per_actor, batch_size,
                       workers, progress, metadata, providers, log)
            except ray.exceptions.RayError as error:  # retries exhausted, a node lost for good, an actor not started
                reason = str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__
                raise BackendError(f"the Ray job failed ({reason}); {_how_to_continue(plan)}") from error
            finally:
                ray.shutdown()
    return finish_inference(plan, predictor)


def _how_to_continue(plan) -> str:
    """What to do after the Ray job failed: continue from the journal, or (nothing answered) start again."""
    if journal_has_rows(plan.journal) or plan.resume:
        return f"the rows already answered are kept in {plan.journal.name}: run the same command with --resume"
    return "no file was answered: run the same command again once the cluster is sound"


def _is_bundled(model_path: Path) -> bool:
    try:
        return model_path.resolve() == default_model().resolve()
    except OSError:  # MissingFileError included: this installation has no bundled model
        return False


def _drive(ray, plan, predictor, model_path: Path, actors: int, cpus: float, gpus: float, batch_size: int,
         workers: int, progress: bool, metadata: dict | None, providers: list[str] | None, log) -> None:
    items = [{"path": str(path), "read": os.path.abspath(path)} for path in plan.files]
    # Enough blocks to keep every actor busy and to retry little after a failure; none empty.
    blocks = min(len(items), max(actors, min(math.ceil(len(items) / batch_size), 20 * actors)))
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        RayAnswerer, batch_size=batch_size, batch_format="numpy", num_cpus=cpus, num_gpus=gpus,
        compute=ray.data.ActorPoolStrategy(size=actors),
        # The bundled model is each node's own copy (installed anywhere); the sha256 check below keeps them one.
        fn_constructor_kwargs={"model": None if _is_bundled(model_path) else os.path.abspath(model_path),
                               "threshold": plan.threshold, "metadata": metadata, "providers": providers,
                               "workers": workers, "threads": max(1, int(cpus))})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", desc="infer (ray)", dynamic_ncols=True)
    answered: set[str] = set()  # a batch Ray ran twice (an actor died after answering it) gives no second row
    started = time.perf_counter()
    waiting = threading.Timer(WAIT_NOTICE_SECONDS, lambda: log and log(
        f"no row after {WAIT_NOTICE_SECONDS} s: the actors may be waiting for free CPUs or GPUs on the cluster "
        "(Ctrl-C stops; the same command with --resume continues)"))
    waiting.daemon = True
    waiting.start()
    try:
        with open_journal(plan.journal) as journal:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                waiting.cancel()
                rows = [row for row in map(json.loads, batch["row"]) if row["path"] not in answered]
                answered.update(row["path"] for row in rows)
                foreign = {row["model_sha256"] for row in rows} - {predictor.sha256}
                if foreign:
                    raise InputError(f"a Ray actor loaded a model file that differs from the driver's (sha256 "
                                     f"{sorted(foreign)[0][:12]}, not {predictor.sha256[:12]}): put the same file at "
                                     f"{os.path.abspath(model_path)} on every node")
                record_rows(journal, rows, plan.summary, bar)
        missing = len(items) - len(answered & {item["path"] for item in items})
        if missing:  # Ray reported success for less than the whole dataset: never write an output short of rows
            raise BackendError(f"the Ray job ended with {missing} of {len(items)} file(s) unanswered; "
                               f"{_how_to_continue(plan)}")
    finally:
        waiting.cancel()
        plan.summary.seconds = time.perf_counter() - started
        if bar is not None:
            bar.close()
