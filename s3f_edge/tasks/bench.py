"""``s3f-edge bench`` as one function: FLOPs per image from a Keras model, this machine's GEMM rate, the timed
measurements of every model, backend and batch, and the JSON and plot they are written to."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BenchOptions:
    """What ``bench`` measures and writes.

    Attributes:
        models: the model files (.keras, .onnx, TensorRT engines).
        backends: the backends to use where each file allows (``runtime.formats.BACKENDS``).
        batch_sizes: the batch sizes timed.
        duration: seconds of timed calls per model, backend and batch (after warm-up).
        warmup: seconds of untimed calls first.
        images: a folder of real images, "random", or None for the packaged images.
        end_to_end: also time files decoded to written rows (``infer``) over this folder.
        gemm: measure this machine's float32 GEMM rate and report achieved FLOP/s as a fraction of it.
        json_out: write the results as JSON there.
        plot_out: write a PNG of latency against batch there.
        overwrite: replace an earlier ``json_out`` or ``plot_out``.
    """
    models: list[Path]
    backends: list[str]
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    duration: float = 5.0
    warmup: float = 1.0
    images: Path | str | None = None
    end_to_end: Path | None = None
    gemm: bool = True
    json_out: Path | None = None
    plot_out: Path | None = None
    overwrite: bool = False


@dataclass
class BenchOutcome:
    """The measurements (``BenchResult`` each), the backends skipped and why, and what they were measured against."""
    results: list
    skipped: list[str]
    flops: dict | None
    gemm_rates: dict
    machine: dict

    @property
    def failed(self) -> int:
        return sum(result.status != "ok" for result in self.results)


def flops_line(model_name: str, flops: dict) -> str:
    """How ``bench`` reports a model's FLOPs per image."""
    return (f"FLOPs per image ({model_name}): {flops['total_fft'] / 1e9:.2f} G with FFT spectral layers "
            f"({flops['spectral_fft'] / 1e9:.3f} G spectral), {flops['total_matmul'] / 1e9:.2f} G as executed with "
            f"DFT-as-matmul ({flops['spectral_matmul'] / 1e9:.3f} G spectral)")


def _flops(models: list[Path], say: Callable[[str], None]) -> dict | None:
    """FLOPs per image of the first .keras model, when the training stack is here to read it."""
    from s3f_edge.dependencies import missing

    keras_models = [m for m in models if Path(m).suffix == ".keras"]
    if not keras_models or missing("tensorflow", "keras"):
        return None
    from s3f_edge.bench.flops import model_flops
    from s3f_edge.model import load_model

    flops = model_flops(load_model(keras_models[0]))
    say(flops_line(Path(keras_models[0]).name, flops))
    return flops


def bench(options: BenchOptions, say: Callable[[str], None] = print,
          log: Callable[[str], None] = print) -> BenchOutcome:
    """Measure every model on every backend that runs it, at every batch size; write the JSON and plot asked for.

    Example:
        >>> from s3f_edge.tasks.bench import BenchOptions, bench
        >>> outcome = bench(BenchOptions([Path("deploy/model.onnx")], ["onnx-cpu"], [1, 32]))  # doctest: +SKIP

    Args:
        options: the ``BenchOptions``.
        say: called with the facts measured before the timings (FLOPs per image, GEMM rates).
        log: called with a line per measurement.

    Returns:
        The ``BenchOutcome``.

    Raises:
        InputError: no image in ``options.end_to_end``, a file that is no model, or nothing could be measured.
        OutputExistsError, OutputError: ``json_out`` or ``plot_out`` exists (without overwrite) or cannot be written,
            checked before any measurement.
    """
    from s3f_edge.bench.machine import describe_machine
    from s3f_edge.bench.runner import bench_models, plot
    from s3f_edge.data.files import require_images
    from s3f_edge.outputs import check_outputs, write_json

    require_images(options.end_to_end, "--end-to-end")
    check_outputs([(options.json_out, "--json"), (options.plot_out, "--plot")], options.overwrite)
    flops = _flops(options.models, say)
    rates = {}
    if options.gemm:
        from s3f_edge.bench.gemm import gemm_rates

        rates = gemm_rates()
        say("float32 GEMM 2048^2: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items()))
    results, skipped = bench_models(list(options.models), options.backends, options.batch_sizes, options.duration,
                                    options.warmup, options.images, options.end_to_end,
                                    flops["total_fft"] if flops else None, max(rates.values()) if rates else None,
                                    log=log)
    outcome = BenchOutcome(results, skipped, flops, rates, describe_machine())
    if options.json_out:
        write_json(options.json_out, {"machine": outcome.machine, "gemm_flops_per_second": rates,
                                      "flops_per_image": flops, "results": [r.to_dict() for r in results],
                                      "skipped": skipped})
    ok = [r for r in results if r.status == "ok"]
    if options.plot_out and ok:
        plot(ok, options.plot_out)
    return outcome
