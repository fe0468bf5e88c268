"""`s3f-edge bench`: latency percentiles, throughput and cold start per backend and batch size."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from s3f_edge.errors import InputError
from s3f_edge.runtime.formats import backends_for, check_model_file, unavailable_reason


@dataclass
class BenchResult:
    model: str
    backend: str
    provider: str
    mode: str  # compute | end-to-end
    batch: int | None
    runs: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    images_per_second: float | None
    cold_start_s: float | None
    gflops_per_second: float | None = None
    fraction_of_gemm: float | None = None
    status: str = "ok"  # or "failed: <why>": a backend that fails is a row, never a lost table

    def to_dict(self) -> dict:
        return asdict(self)


def display_name(path: Path) -> str:
    """'folder/file': exports are all called model.onnx, so the folder tells them apart."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def failed(model: str, backend: str, reason: str, batch: int | None = None) -> BenchResult:
    return BenchResult(model, backend, "-", "compute", batch, 0, None, None, None, None, None, None,
                       status=f"failed: {reason}")


def input_batch(contract, batch: int, images: Path | None, seed: int) -> np.ndarray:
    """Real images tiled to ``batch`` (default: the packaged parity set) or fresh random tensors; never zeros."""
    from s3f_edge.runtime.parity import random_batch, real_batch

    if images == "random":
        return random_batch(contract, batch, seed)
    pool = real_batch(contract, images, limit=max(batch, 8))
    return np.ascontiguousarray(np.resize(pool, (batch, *pool.shape[1:])))


def measure(predict, batch: np.ndarray, warmup_s: float, duration_s: float, min_runs: int = 5, *,
            clock: Callable[[], float] = time.perf_counter) -> np.ndarray:
    """Latencies (s) of ``predict(batch)`` over ``duration_s`` after ``warmup_s`` of untimed runs.

    Args:
        predict: the function timed, called with ``batch``.
        batch: its input.
        warmup_s: seconds of untimed calls first.
        duration_s: seconds of timed calls (the last one may end after it).
        min_runs: at least this many timed calls, however long they take.
        clock: seconds from an arbitrary start; tests pass one that ``predict`` advances, so that no sleep and no
            busy machine decides the outcome.

    Returns:
        Each timed call's latency in seconds, in call order.
    """
    started = clock()
    while clock() - started < warmup_s:
        predict(batch)
    latencies = []
    started = clock()
    while clock() - started < duration_s or len(latencies) < min_runs:
        begin = clock()
        predict(batch)
        latencies.append(clock() - begin)
    return np.asarray(latencies)


def measure_in_turns(contenders: dict, batch: np.ndarray, warmup_s: float, duration_s: float,
                     rounds: int = 3, min_runs_per_round: int = 2, *,
                     clock: Callable[[], float] = time.perf_counter) -> tuple[dict, dict]:
    """Latencies of several ``predict`` functions on the same batch, taken in turns.

    ``rounds`` rounds of ``duration_s / rounds`` seconds each, keeping for each contender its round with the
    lowest median. A shared machine that switches between a fast and a throttled state then compares like with
    like instead of whichever state each contender happened to meet; ``min_runs_per_round`` keeps a slow
    contender (a batch of 32 at 256x256 takes seconds) from tripling the run.

    Args:
        contenders: ``predict`` functions by name.
        batch: the input every contender is timed on.
        warmup_s: seconds of untimed calls before a contender's first round.
        duration_s: timed seconds per contender, split over the rounds.
        rounds: how many rounds.
        min_runs_per_round: timed calls per round at least, however long they take.
        clock: as for ``measure``.

    Returns:
        (latencies in seconds by name, errors by name): a contender that raises is dropped with its error
        (``"Type: message"``), the others go on.
    """
    best: dict = {}
    errors: dict = {}
    for _ in range(rounds):
        for name, predict in contenders.items():
            if name in errors:
                continue
            try:
                latencies = measure(predict, batch, warmup_s if name not in best else 0.0, duration_s / rounds,
                                    min_runs=min_runs_per_round, clock=clock)
            except Exception as error:  # an engine's own error types
                errors[name] = f"{type(error).__name__}: {error}"
                continue
            if name not in best or np.median(latencies) < np.median(best[name]):
                best[name] = latencies
    return best, errors


def summarise(model: str, backend: str, provider: str, mode: str, batch: int, latencies: np.ndarray,
              cold_start: float, flops_per_image: float | None, gemm_rate: float | None) -> BenchResult:
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) * 1e3
    throughput = batch / float(np.mean(latencies))
    gflops = throughput * flops_per_image / 1e9 if flops_per_image else None
    return BenchResult(model, backend, provider, mode, batch, len(latencies), round(p50, 3), round(p90, 3),
                       round(p99, 3), round(float(latencies.max()) * 1e3, 3), round(throughput, 2),
                       round(cold_start, 3), round(gflops, 2) if gflops else None,
                       round(gflops * 1e9 / gemm_rate, 4) if gflops and gemm_rate else None)


def bench_models(models: list[Path], backends: list[str], batches: list[int], duration_s: float, warmup_s: float,
                 images: Path | str | None = None, end_to_end_dir: Path | None = None,
                 flops_per_image: float | None = None, gemm_rate: float | None = None,
                 log=print) -> tuple[list[BenchResult], list[str]]:
    """Benchmark every (model, applicable backend, batch).

    A backend unavailable here is skipped with a note; one that fails to load or run becomes a failed row, and the
    others go on.

    Args:
        models: the model files (.keras, .onnx, TensorRT engines).
        backends: the backend names to use (``BACKENDS``); each model runs on those that run its format.
        batches: the batch sizes timed.
        duration_s: seconds of timed calls per (model, backend, batch), at least 5 calls.
        warmup_s: seconds of untimed calls before each measurement.
        images: a folder of real images tiled to each batch, ``"random"`` for fresh random inputs, or None for the
            packaged parity images.
        end_to_end_dir: also time `infer` on the files under this folder, at the largest batch; None: not.
        flops_per_image: the model's FLOPs per image, for GFLOP/s; None: not reported.
        gemm_rate: the machine's GEMM rate in FLOP/s, for the fraction of it reached; None: not reported.
        log: called with a line per measurement.

    Returns:
        (results, skipped): a ``BenchResult`` per measurement or failure, and a note per skipped backend.

    Raises:
        MissingFileError: a model file does not exist (all are checked before any measurement).
        InputError: a file that is no model, or nothing could be measured.
        EngineMismatch: a TensorRT engine without a valid s3f-edge sidecar.
    """
    from s3f_edge.runtime.formats import load_predictor
    from s3f_edge.runtime.predictor import nonfinite_rows

    results, skipped = [], []
    for path in models:  # a file that is no model at all is one error, before any measurement
        check_model_file(path)
    for path in models:
        for backend in backends_for(path):
            if backend not in backends:
                continue
            reason = unavailable_reason(backend)
            if reason:
                skipped.append(f"{display_name(path)} on {backend}: {reason}")
                continue
            started = time.perf_counter()
            try:
                predictor = load_predictor(path, backend=backend)
                first = predictor.predict(input_batch(predictor.contract, 1, images, seed=1))
            except Exception as error:  # an engine's own error types: report it in its row, keep the others
                results.append(failed(display_name(path), backend, f"{type(error).__name__}: {error}"))
                log(f"  {display_name(path):<24} {backend:<9} failed: {error}")
                continue
            cold_start = time.perf_counter() - started
            if nonfinite_rows(first).any():
                results.append(failed(display_name(path), backend, "outputs are NaN or infinite"))
                continue
            for batch in batches:
                data = input_batch(predictor.contract, batch, images, seed=batch)
                try:
                    latencies = measure(predictor.predict, data, warmup_s, duration_s)
                except Exception as error:  # e.g. out of GPU memory at a large batch
                    results.append(failed(display_name(path), backend, f"{type(error).__name__}: {error}", batch))
                    continue
                result = summarise(display_name(path), backend, predictor.provider, "compute", batch, latencies,
                                   cold_start, flops_per_image, gemm_rate)
                results.append(result)
                log(f"  {result.model:<24} {backend:<9} batch {batch:>3}: p50 {result.p50_ms:9.2f} ms, "
                    f"{result.images_per_second:8.1f} img/s")
            if end_to_end_dir is not None:
                results.append(end_to_end(predictor, display_name(path), backend, end_to_end_dir, max(batches),
                                          cold_start))
    if not results:  # an empty table is no benchmark: say why nothing ran
        why = "; ".join(skipped) or f"none of the backends {', '.join(backends)} runs {', '.join(map(str, models))}"
        raise InputError(f"nothing could be measured: {why}")
    return results, skipped


def end_to_end(predictor, model_name: str, backend: str, folder: Path, batch: int, cold_start: float) -> BenchResult:
    """Files decoded to written rows, through `infer`; latency per batch is the mean."""
    import tempfile

    from s3f_edge.runtime.local import infer_folder

    with tempfile.TemporaryDirectory() as scratch:
        summary = infer_folder(folder, predictor, Path(scratch) / "r.csv", batch_size=batch, recursive=True,
                               progress=False)
    per_batch = np.asarray([summary.seconds / max(1, (summary.succeeded + summary.failed) / batch)])
    return summarise(model_name, backend, predictor.provider, "end-to-end", batch, per_batch, cold_start, None, None)


def plot(results: list[BenchResult], out_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[BenchResult]] = {}
    for r in results:
        if r.mode == "compute":
            series.setdefault(f"{r.model} · {r.backend}", []).append(r)
    for label, points in series.items():
        points.sort(key=lambda r: r.batch)
        ax.plot([p.batch for p in points], [p.p50_ms for p in points], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per batch (ms)")
    ax.set_title("s3f-edge bench: latency against batch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
