"""`s3f-edge matrix`: accuracy and speed of every deployable form of one model, side by side.

From a .keras model it produces every artefact (ONNX FP32, FP16 and INT8, and TensorRT FP32/FP16/INT8
engines where TensorRT and a GPU are present), scores each on a whole labelled folder against the
labels and against Keras's own predictions, and times each in the same run at the given batch sizes.
One row per (artefact, backend); JSON and Markdown out. A step that fails becomes a row saying why.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from s3f_edge.bench.machine import describe_machine
from s3f_edge.bench.runner import measure_in_turns
from s3f_edge.runtime.formats import load_predictor, unavailable_reason
from s3f_edge.runtime.predictor import nonfinite_rows
from s3f_edge.train.metrics import macro_f1

TIMED_ONLY = "timed only: failed its parity gate (speed-only matrix)"


@dataclass
class MatrixRow:
    artefact: str
    backend: str
    file: str
    size_mb: float | None = None
    status: str = "ok"
    accuracy: float | None = None
    f1_macro: float | None = None
    top1_agreement: float | None = None  # with Keras, on the same images
    p50_ms: dict[str, float] = field(default_factory=dict)  # keyed by batch size, as text (JSON keys)
    images_per_second: dict[str, float] = field(default_factory=dict)
    speedup_vs_keras: dict[str, float] = field(default_factory=dict)


MATRIX_FILES = ("matrix.json", "matrix.md")
PRECISION_FOLDERS = ("fp32", "fp16", "int8")


def _artefacts(keras_path: Path, out_dir: Path, calib: Path | None, trt: bool, fft: str, log,
               speed_only: bool = False) -> list[tuple]:
    """(name, path, backend, precision, problem) of every artefact, exporting them; failures come back with path
    None. ``speed_only`` (no labelled data, e.g. random weights, whose near-uniform outputs make top-1 parity a
    coin toss): a file that failed only its parity gate is still timed, under a name and status that say so."""
    from s3f_edge.errors import S3FEdgeError
    from s3f_edge.export.choices import engine_file_name, onnx_file_name
    from s3f_edge.export.onnx_export import ExportOptions, ParityError, export_model

    found = [("Keras (TensorFlow)", keras_path, "keras", "fp32", None)]
    onnx_backends = ["onnx-cpu"] + (["onnx-cuda"] if unavailable_reason("onnx-cuda") is None else [])
    for precision in PRECISION_FOLDERS:
        name = f"ONNX {precision.upper()}"
        if precision == "int8" and calib is None:
            found.append((name, None, "onnx-cpu", precision, "skipped: INT8 needs --calib IMAGES"))
            continue
        folder = out_dir / precision
        started = time.perf_counter()
        try:
            # Speed and accuracy only: a calibrated model's refusal and sets are copied, not fitted per file.
            export_model(keras_path, ExportOptions(out_dir=folder, fft=fft, precision=precision, calib=calib, trt=trt,
                                                   parity_images=None, overwrite=True, copy_calibration=True))
        except ParityError as error:
            kept = folder / (onnx_file_name(precision) + ".failed")
            if not (speed_only and kept.exists()):
                found.append((name, None, "onnx-cpu", precision, f"failed: {error}"))
                continue
            timed = kept.replace(folder / onnx_file_name(precision).replace(".onnx", ".parity-failed.onnx"))
            log(f"{precision}: timing {timed.name} only ({error})")
            found.append((name, timed, "onnx-cpu", precision, TIMED_ONLY))
            continue
        except S3FEdgeError as error:
            found.append((name, None, "onnx-cpu", precision, f"failed: {error}"))
            continue
        log(f"exported {precision} in {time.perf_counter() - started:.0f} s")
        found += [(name, folder / onnx_file_name(precision), backend, precision, None) for backend in onnx_backends]
        if trt:
            found.append((f"TensorRT {precision.upper()}", folder / engine_file_name(precision), "trt", precision,
                          None))
    return found


def accuracy_speed_matrix(keras_path: str | Path, out_dir: str | Path, data: str | Path | None = None,
                          calib: str | Path | None = None, batches: tuple[int, ...] = (1, 32), duration: float = 3.0,
                          warmup: float = 0.5, fft: str = "matmul", trt: bool | None = None, log=print,
                          overwrite: bool = False) -> dict:
    """Export, score and time every artefact of ``keras_path``; write matrix.json and matrix.md in ``out_dir``.

    An artefact that fails to export, load or run becomes a row saying why; the others go on.

    Args:
        keras_path: the trained .keras model.
        out_dir: where matrix.json, matrix.md and the exports (fp32/, fp16/, int8/) go.
        data: a labelled folder (DATA/<class>/... or a dataset root with test/) for accuracy; None: the matrix is
            speed only (timed on the packaged images).
        calib: images for INT8 calibration; None: no INT8 artefact (its row says so).
        batches: the batch sizes timed.
        duration: timed seconds per artefact and batch, split over rounds (``measure_in_turns``).
        warmup: seconds of untimed calls before each artefact's first round.
        fft: the SpectralFilter lowering of the exports: ``"matmul"`` or ``"dft"``.
        trt: build and time TensorRT engines; None: when TensorRT and a GPU are available.
        log: called with progress lines.
        overwrite: replace an earlier matrix in ``out_dir`` (its tables and its exports); else it is refused.

    Returns:
        What matrix.json holds: model, date, data, images scored, batches, machine, GEMM rates, FLOPs per image, and
        a row per (artefact, backend): size, status, accuracy, macro-F1, top-1 agreement with Keras, and per batch
        the p50 latency, images/s and speed-up over Keras.

    Raises:
        InputError: the folder's classes are not the model's, or ``calib`` holds no image.
        DatasetError: ``data`` is no usable labelled folder.
        OutputExistsError: an earlier matrix in ``out_dir`` and ``overwrite`` is false.
        OutputError: ``out_dir`` cannot be written.
    """
    from s3f_edge.bench.gemm import gemm_rates, int8_gemm_rate
    from s3f_edge.data.files import require_images
    from s3f_edge.outputs import atomic_write_text, ensure_writable, write_json
    from s3f_edge.runtime.parity import real_batch

    require_images(calib, "--calib")
    keras_path, out_dir = Path(keras_path), Path(out_dir)
    ensure_writable(out_dir, "--out", folder=True)
    trt = (unavailable_reason("trt") is None) if trt is None else trt
    reference = load_predictor(keras_path)
    images, labels = _labelled_images(data, reference)
    timing_pool = images if images is not None else real_batch(reference.contract, None)
    _claim_matrix_outputs(out_dir, overwrite)
    artefacts = _artefacts(keras_path, out_dir, Path(calib) if calib else None, trt, fft, log,
                           speed_only=images is None)
    rows, timed = _score_artefacts(artefacts, reference, images, labels, log)
    _time_in_turns(timed, timing_pool, batches, warmup, duration, log)
    _add_speedups(rows, keras_row=rows[0])
    result = {
        "model": str(keras_path), "date": time.strftime("%Y-%m-%d"), "data": str(data) if data else None,
        "images_scored": int(len(labels)) if labels is not None else 0, "batches": list(batches),
        "machine": describe_machine(),
        "gemm_ops_per_second": {**{f"fp32 {k}": v for k, v in gemm_rates().items()},
                                "int8 onnxruntime": int8_gemm_rate()},
        "flops_per_image": _flops(reference),
        "rows": [asdict(row) for row in rows],
    }
    write_json(out_dir / "matrix.json", result)
    atomic_write_text(out_dir / "matrix.md", markdown(result))
    return result


def _labelled_images(data: str | Path | None, reference) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(images, labels) of the labelled folder ``data``, preprocessed as ``reference`` takes them; (None, None)
    without one (a speed-only matrix).

    Raises:
        InputError: the folder's classes are not the model's.
        DatasetError: ``data`` is no usable labelled folder.
    """
    if data is None:
        return None, None
    from s3f_edge.data.folders import load_split
    from s3f_edge.errors import InputError
    from s3f_edge.train.evaluate import labelled_split

    dataset, split, _ = labelled_split(data)
    if dataset.class_names != reference.class_names:
        raise InputError(f"the folder's classes {dataset.class_names} differ from the model's "
                         f"{reference.class_names}")
    images, labels, _ = load_split(split, reference.contract)
    return images, labels


def _claim_matrix_outputs(out_dir: Path, overwrite: bool) -> None:
    """Refuse an earlier matrix in ``out_dir`` (its tables and exports) unless ``overwrite``, which removes it."""
    from s3f_edge.export.onnx_export import export_artefacts
    from s3f_edge.outputs import claim_outputs

    earlier = [out_dir / name for name in MATRIX_FILES]
    earlier += [path for precision in PRECISION_FOLDERS for path in export_artefacts(out_dir / precision)]
    claim_outputs(earlier, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)


def _score_artefacts(artefacts: list[tuple], reference, images: np.ndarray | None, labels: np.ndarray | None,
                     log) -> tuple[list[MatrixRow], dict[int, tuple[MatrixRow, object]]]:
    """A row per artefact (``_artefacts``' order, Keras first), loaded and, given labelled images, scored.

    Returns:
        (rows, the artefacts to time: row index -> (row, predictor)); one that fails to load, run or give finite
        outputs has a row saying why and is not timed.
    """
    rows: list[MatrixRow] = []
    timed: dict[int, tuple[MatrixRow, object]] = {}
    expected = None  # Keras's own predictions, for every artefact's top-1 agreement
    for name, path, backend, _precision, problem in artefacts:
        row = MatrixRow(name, backend, str(path) if path else "-", status=problem or "ok")
        rows.append(row)
        if problem and problem != TIMED_ONLY:
            continue
        row.size_mb = round(Path(path).stat().st_size / 1e6, 2)
        try:
            predictor = reference if backend == "keras" else load_predictor(path, backend=backend)
            if images is not None:
                probabilities = predictor.predict_all(images)
                if nonfinite_rows(probabilities).any():
                    row.status = "failed: NaN/inf outputs"
                    continue
                predicted = probabilities.argmax(1)
                expected = predicted if backend == "keras" else expected
                row.accuracy = round(float((predicted == labels).mean()), 4)
                row.f1_macro = round(macro_f1(labels, predicted, len(reference.class_names)), 4)
                row.top1_agreement = round(float((predicted == expected).mean()), 4)
            timed[len(rows) - 1] = (row, predictor)
        except Exception as error:  # an engine's own error types: the row says why, the others go on
            row.status = f"failed: {type(error).__name__}: {error}"
        log(f"  {name:<20} {backend:<9} {row.status} acc {row.accuracy}")
    return rows, timed


def _time_in_turns(timed: dict[int, tuple[MatrixRow, object]], pool: np.ndarray, batches: tuple[int, ...],
                   warmup: float, duration: float, log) -> None:
    """Fill each timed row's p50 latency and images/s per batch size (a row whose artefact fails here says so).

    All artefacts are timed in turns, so that each meets the same machine (``measure_in_turns``), on ``pool``'s
    images tiled to each batch size.
    """
    for batch in batches:
        tiled = np.ascontiguousarray(np.resize(pool, (batch, *pool.shape[1:])), np.float32)
        latencies, errors = measure_in_turns({index: predictor.predict for index, (_, predictor) in timed.items()},
                                             tiled, warmup, duration)
        for index, values in latencies.items():
            row = timed[index][0]
            row.p50_ms[str(batch)] = round(float(np.median(values)) * 1e3, 3)
            row.images_per_second[str(batch)] = round(batch / float(np.mean(values)), 2)
        for index, error in errors.items():
            timed[index][0].status = f"failed while timed: {error}"
        log(f"  batch {batch}: " + ", ".join(f"{timed[i][0].artefact} ({timed[i][0].backend}) "
                                            f"{timed[i][0].p50_ms[str(batch)]} ms" for i in latencies))


def _add_speedups(rows: list[MatrixRow], keras_row: MatrixRow) -> None:
    """Each row's speed-up over Keras per batch size, where both were timed."""
    for row in rows:
        for batch, milliseconds in row.p50_ms.items():
            if keras_row.p50_ms.get(batch):
                row.speedup_vs_keras[batch] = round(keras_row.p50_ms[batch] / milliseconds, 2)


def _flops(reference) -> dict | None:
    from s3f_edge.bench.flops import model_flops

    return model_flops(reference.model) if hasattr(reference, "model") else None


def markdown(result: dict) -> str:
    """The matrix as a Markdown table (what the README shows), with the yardsticks under it."""
    batches = result["batches"]
    scored = result["images_scored"] > 0
    header = ["artefact", "backend", "MB"] + (["accuracy", "macro-F1", "top-1 = Keras"] if scored else [])
    header += [f"p50 ms (batch {b})" for b in batches] + [f"images/s (batch {b})" for b in batches]
    header += [f"× Keras (batch {b})" for b in batches] + ["status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    dash = lambda value, fmt="{}": "-" if value is None else fmt.format(value)  # noqa: E731
    for row in result["rows"]:
        cells = [row["artefact"], row["backend"], dash(row["size_mb"])]
        if scored:
            cells += [dash(row["accuracy"], "{:.2%}"), dash(row["f1_macro"], "{:.3f}"),
                      dash(row["top1_agreement"], "{:.2%}")]
        cells += ([dash(_get(row["p50_ms"], b)) for b in batches]
                  + [dash(_get(row["images_per_second"], b)) for b in batches])
        cells += [dash(_get(row["speedup_vs_keras"], b), "{}×") for b in batches] + [row["status"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    gemm = ", ".join(f"{name} {rate / 1e9:.0f} G/s" for name, rate in result["gemm_ops_per_second"].items() if rate)
    flops = result.get("flops_per_image")
    note = (f"\n{result['machine']['processor']}, {result['machine']['cpus']} CPUs, {result['date']}. "
            f"GEMM 2048² in the same run: {gemm}.")
    if flops:
        note += (f" Model: {flops['total_fft'] / 1e9:.2f} GFLOP per image with the spectral layers at FFT cost "
                 f"({flops['total_matmul'] / 1e9:.2f} G as the ONNX DFT-as-matmul form executes them).")
    return "\n".join(lines) + "\n" + note + "\n"


def _get(mapping: dict, batch: int):
    return mapping.get(str(batch))
