"""`s3f-edge infer --ray`: the same inference, its decoding and prediction spread over a Ray cluster.

``RayExecutor`` is an executor of the inference loop (``runtime/infer.py``): the file list becomes a Ray Data
dataset; ``map_batches`` runs ``RayAnswerer``, a callable class that loads the model once per actor and turns a
batch of paths into result rows (decoding included, so pixels never travel). The driver runs the loop, which keeps
everything that makes ``infer`` trustworthy on one machine: the checks before any work, the journal written as
batches arrive (a driver that dies loses nothing already answered, and ``--resume`` continues), and the final
output written once, sorted, atomically. Ray restarts an actor that dies and retries its batches; the loop keys
rows by path, so a retried batch never makes a second row.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from s3f_edge.dependencies import import_module
from s3f_edge.errors import BackendError, InputError
from s3f_edge.runtime.answers import answer_images, error_row
from s3f_edge.runtime.formats import load_predictor, model_format
from s3f_edge.runtime.infer import (
    LOCAL,
    ClusterOptions,
    InferOptions,
    InferPlan,
    InferSummary,
    how_to_continue,
    run_inference,
)
from s3f_edge.runtime.inputs import decode_file
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR, Predictor, is_bundled_model
from s3f_edge.runtime.tensorrt_env import engine_metadata

CLUSTER_SOUND = "the cluster is sound"
WAIT_NOTICE_SECONDS = 60  # with no row by then, say that the actors may be waiting for the cluster's resources


class RayAnswerer:
    """One Ray actor: loads the model once, then answers batches of paths with result rows.

    Args:
        model: the model file, at a path every node can read; with ``bundled``, the name of a bundled model file,
            which each node loads from its own installation.
        bundled: whether ``model`` names a bundled model file.
        threshold: the refusal threshold the driver chose (None: refuse nothing).
        metadata: class names and preprocessing to use instead of the file's own (as ``load_predictor``).
        providers: ONNX Runtime providers in order of preference; None: the best on the node.
        workers: decoding threads inside the actor.
        threads: ONNX Runtime's threads, the CPUs Ray reserved for the actor.
    """

    def __init__(self, model: str, threshold: float | None, metadata: dict | None = None,
                 providers: list[str] | None = None, workers: int = 2, threads: int = 1, bundled: bool = False):
        from s3f_edge.runtime.onnx_backend import INTRA_OP_THREADS_VARIABLE

        os.environ[INTRA_OP_THREADS_VARIABLE] = str(max(1, threads))
        self.predictor = load_predictor(DEFAULT_MODEL_DIR / model if bundled else model, providers=providers,
                                        metadata=metadata)
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
    context.enable_progress_bars = False  # ours is the one progress bar, on the driver
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


class RayExecutor:
    """The inference loop's executor on a Ray cluster: the planned files become a Ray Data dataset whose batches
    ``RayAnswerer`` actors answer; the driver (this process) keeps the loop, its journal and its output.

    The checks that need no cluster run when it is made: an engine without GPUs, a malformed or silent address,
    more actors than this machine holds (``LOCAL``), Ray missing.

    Args:
        predictor: the model as the driver knows it (``driver_model``).
        model_path: the same model's file, at a path every node can read.
        options: the run's ``InferOptions`` (its ``cluster``, batch size, workers, providers, class names).
        log: where the notice of a cluster that gives no row for a while goes.
        ray: the ``ray`` module (a test's stand-in); None: imported.

    Raises:
        InputError: see above. MissingDependencyError: Ray is not installed (the ``cluster`` extra).
    """

    label = "infer (ray)"
    job = "the Ray job"
    shows_rate = False
    sound_when = CLUSTER_SOUND

    def __init__(self, predictor, model_path: str | Path, options: InferOptions, log=None, ray=None):
        self.predictor, self.model_path, self.options, self.log = predictor, Path(model_path), options, log
        self.cluster = cluster = options.cluster or ClusterOptions()
        self.wait_notice_seconds = WAIT_NOTICE_SECONDS
        if model_format(model_path).name == "tensorrt" and cluster.gpus_per_actor <= 0:
            raise InputError(f"{Path(model_path).name} is a TensorRT engine, which runs on a GPU: add --ray-gpus 1 so "
                             "that its actors are placed on GPU nodes (or give the .onnx file to run on CPUs)")
        _check_reachable(cluster.address)
        if cluster.address == LOCAL:  # a Ray of more CPUs than the machine has would only crowd it
            _check_room_here(cluster.actors, cluster.cpus_per_actor, cluster.gpus_per_actor)
        self.ray = ray or import_module("ray", "infer --ray", "cluster")
        if ray is None:
            import_module("ray.data", "infer --ray", "cluster")

    @contextmanager
    def session(self, plan: InferPlan):
        """Ray started (``LOCAL``) or joined, checked to hold the actors, and shut down whatever happens; Ray's own
        failures while it is up become one-line errors."""
        ray, cluster = self.ray, self.cluster
        _connect(ray, cluster.address, local_cpus() if cluster.address == LOCAL else None)
        try:
            _check_room(ray, cluster.address, cluster.actors, cluster.cpus_per_actor, cluster.gpus_per_actor)
            yield
        except ray.exceptions.RayError as error:  # retries exhausted, a node lost for good, an actor not started
            reason = str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__
            raise BackendError(f"the Ray job failed ({reason}); {how_to_continue(plan, self.sound_when)}") from error
        finally:
            ray.shutdown()

    def batches(self, plan: InferPlan) -> Iterator[list[dict]]:
        """The actors' rows, in a ``session``; a notice when none comes for a while."""
        waiting = threading.Timer(self.wait_notice_seconds, self._say_waiting)
        waiting.daemon = True
        waiting.start()
        try:
            for batch in self._dataset(plan).iter_batches(batch_size=None, batch_format="numpy"):
                waiting.cancel()
                rows = [json.loads(row) for row in batch["row"]]
                self._check_model(rows)
                yield rows
        finally:
            waiting.cancel()

    def _dataset(self, plan: InferPlan):
        options, cluster = self.options, self.cluster
        items = [{"path": str(path), "read": os.path.abspath(path)} for path in plan.files]
        # Enough blocks to keep every actor busy and to retry little after a failure; none empty.
        blocks = min(len(items), max(cluster.actors, min(math.ceil(len(items) / options.batch_size),
                                                         20 * cluster.actors)))
        bundled = is_bundled_model(self.model_path)  # each node's own copy, installed anywhere: the sha256 check
        return self.ray.data.from_items(items, override_num_blocks=blocks).map_batches(  # keeps them one
            RayAnswerer, batch_size=options.batch_size, batch_format="numpy", num_cpus=cluster.cpus_per_actor,
            num_gpus=cluster.gpus_per_actor, compute=self.ray.data.ActorPoolStrategy(size=cluster.actors),
            fn_constructor_kwargs={"model": self.model_path.name if bundled else os.path.abspath(self.model_path),
                                   "bundled": bundled, "threshold": plan.threshold, "metadata": options.metadata,
                                   "providers": options.providers, "workers": options.workers,
                                   "threads": max(1, int(cluster.cpus_per_actor))})

    def _check_model(self, rows: list[dict]) -> None:
        foreign = {row["model_sha256"] for row in rows} - {self.predictor.sha256}
        if foreign:
            raise InputError(f"a Ray actor loaded a model file that differs from the driver's (sha256 "
                             f"{sorted(foreign)[0][:12]}, not {self.predictor.sha256[:12]}): put the same file at "
                             f"{os.path.abspath(self.model_path)} on every node")

    def _say_waiting(self) -> None:
        if self.log is not None:
            self.log(f"no row after {self.wait_notice_seconds:g} s: the actors may be waiting for free CPUs or GPUs on "
                     "the cluster (Ctrl-C stops; the same command with --resume continues)")


def infer_folder_on_ray(folder: str | Path, predictor, model_path: str | Path, output: str | Path, *,
                        address: str = LOCAL, actors: int = 2, cpus_per_actor: float = 1.0,
                        gpus_per_actor: float = 0.0, workers: int = 2, metadata: dict | None = None, log=None,
                        **options) -> InferSummary:
    """``infer_folder`` with decoding and prediction on a Ray cluster: the same rows, checks and output.

    Example:
        >>> from s3f_edge.runtime.cluster import driver_model, infer_folder_on_ray
        >>> model = "/shared/deploy/model.onnx"  # doctest: +SKIP
        >>> infer_folder_on_ray("/shared/scans", driver_model(model), model, "results.csv",
        ...                     address="head-node:6379", actors=16)  # doctest: +SKIP

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
        workers: decoding threads inside each actor.
        metadata: class names and preprocessing overriding the file's own (as given to ``load_predictor``).
        log: called with lines describing the run, after every check passed.
        **options: the other ``InferOptions`` (batch_size, recursive, resume, overwrite, accept_ood, ood_threshold,
            progress, providers).

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
    settings = InferOptions(Path(folder), Path(output), model=Path(model_path), workers=workers,
                            model_metadata=metadata, cluster=ClusterOptions(address, actors, cpus_per_actor,
                                                                            gpus_per_actor), **options)
    problems = settings.usage_problems()
    if problems:
        raise InputError(problems[0])
    return run_inference(settings, predictor, RayExecutor(predictor, model_path, settings, log), log)
