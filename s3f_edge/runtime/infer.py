"""`s3f-edge infer`: every file in a folder gets a row — a prediction or the reason it has none.

Decoding runs in a thread pool ahead of inference through a bounded window of futures, so memory
holds at most a few batches of pixels whatever the folder size. Rows go to a journal beside the
output as each batch finishes; the final file is written once, sorted by path, to a temporary file
that is then renamed, so a crash never leaves a half-written output and ``resume`` knows what is done.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3f_edge.data.preprocess import IMAGE_SUFFIXES, ImageDecodeError, load_image
from s3f_edge.errors import InputError, MissingFileError, OutputExistsError
from s3f_edge.runtime.predictor import nonfinite_rows

NONFINITE_REASON = "model output is NaN or infinite: the model or its export is broken"

OUTPUT_FORMATS = (".csv", ".jsonl", ".json")


@dataclass
class InferSummary:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped_as_done: int = 0
    per_class: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    output: Path | None = None

    @property
    def images_per_second(self) -> float:
        processed = self.succeeded + self.failed
        return processed / self.seconds if self.seconds > 0 else 0.0


def discover_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Every file (and broken link) under ``folder``, sorted by path; hidden files excluded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in candidates
             if not any(part.startswith(".") for part in p.relative_to(folder).parts)
             and (p.is_file() or (p.is_symlink() and not p.exists()))]
    return sorted(files, key=lambda p: str(p))


def _decode(path: Path, contract):
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, f"unsupported format {path.suffix or '(no suffix)'!r}; supported: {', '.join(IMAGE_SUFFIXES)}"
    try:
        return load_image(path, contract), None
    except ImageDecodeError as error:
        return None, str(error)
    except (OSError, MemoryError, ValueError) as error:  # never let one file stop the run
        return None, f"{type(error).__name__}: {error}"


def _columns(class_names: list[str]) -> list[str]:
    return ["path", "status", "reason", "predicted_class", *[f"prob_{name}" for name in class_names], "model", "model_sha256"]


def _row(path: Path, predictor, probabilities=None, reason: str = "") -> dict:
    row = {"path": str(path), "status": "ok" if probabilities is not None else "error", "reason": reason,
           "predicted_class": "", "model": predictor.name, "model_sha256": predictor.sha256}
    for index, name in enumerate(predictor.class_names):
        row[f"prob_{name}"] = "" if probabilities is None else round(float(probabilities[index]), 6)
    if probabilities is not None:
        row["predicted_class"] = predictor.class_names[int(np.argmax(probabilities))]
    return row


def journal_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial.jsonl")


def read_rows(path: Path) -> list[dict]:
    """Rows of an existing output (csv, jsonl or json) or journal; a torn last journal line is ignored."""
    if not path.exists():
        return []
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))["results"]
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the process died while writing this line; the file will be redone
    return rows


def write_output(output: Path, rows: list[dict], columns: list[str], model_name: str) -> None:
    """Write all rows sorted by path to a temporary file, then rename it over ``output``."""
    rows = sorted(rows, key=lambda r: r["path"])
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}-", dir=output.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            if output.suffix == ".csv":
                writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
            elif output.suffix == ".jsonl":
                stream.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            else:
                json.dump({"model": model_name, "results": rows}, stream, ensure_ascii=False, indent=1)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def infer_folder(folder: str | Path, predictor, output: str | Path, batch_size: int = 32, recursive: bool = False,
                 workers: int = 4, resume: bool = False, progress: bool = True, explain_dir: Path | None = None,
                 explain_classes: set[str] | None = None) -> InferSummary:
    """Classify every file under ``folder`` with ``predictor``; write one row per file to ``output``."""
    output = Path(output)
    if output.suffix not in OUTPUT_FORMATS:
        raise InputError(f"output must end in one of {OUTPUT_FORMATS}, got {output.name!r}")
    if batch_size < 1 or workers < 1:
        raise InputError("batch size and workers must be at least 1")
    output.parent.mkdir(parents=True, exist_ok=True)
    journal = journal_path(output)
    files = discover_files(folder, recursive)
    summary = InferSummary(total=len(files), output=output)

    previous: list[dict] = []
    if resume:
        by_path = {r["path"]: r for r in read_rows(output) + read_rows(journal)}
        others = {(r.get("model", "?"), r.get("model_sha256", "")) for r in by_path.values()
                  if r.get("model_sha256") != predictor.sha256}
        if others:
            names = ", ".join(f"{name} (sha256 {sha[:12] or 'unknown'})" for name, sha in sorted(others))
            raise InputError(f"{output} holds rows from {names}, not from {predictor.name} (sha256 "
                             f"{predictor.sha256[:12]}); resume with that model, or write to another --out")
        previous = list(by_path.values())
        done = set(by_path)
        summary.skipped_as_done = sum(1 for f in files if str(f) in done)
        files = [f for f in files if str(f) not in done]
    elif output.exists() or journal.exists():
        raise OutputExistsError(f"{output} (or its journal) exists; pass --resume to continue it, or choose another --out")

    explainer = None
    if explain_dir is not None:
        from s3f_edge.runtime.gradcam import GradCam

        explainer = GradCam(predictor, Path(explain_dir), explain_classes)

    contract = predictor.contract
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="img", desc="infer", dynamic_ncols=True)
    window = max(2 * batch_size, 2 * workers)  # decoded-but-unconsumed images held at most
    with ThreadPoolExecutor(max_workers=workers) as pool, open(journal, "a", encoding="utf-8") as log:
        pending: deque = deque()
        remaining = iter(files)
        batch_paths, batch_images, rows = [], [], []

        def flush():
            if batch_images:
                probabilities = predictor.predict(np.stack(batch_images))
                broken = nonfinite_rows(probabilities)
                for path, probs, bad in zip(batch_paths, probabilities, broken):
                    if bad:  # never report a class for NaN probabilities (argmax of NaN is 0)
                        rows.append(_row(path, predictor, reason=NONFINITE_REASON))
                        summary.failed += 1
                        continue
                    rows.append(_row(path, predictor, probs))
                    summary.per_class[rows[-1]["predicted_class"]] += 1
                    summary.succeeded += 1
                if explainer is not None:
                    explainer.explain(batch_paths, np.stack(batch_images), probabilities)
            log.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            log.flush()
            if bar is not None:
                bar.update(len(rows))
                bar.set_postfix(img_s=f"{(summary.succeeded + summary.failed) / max(time.perf_counter() - started, 1e-9):.1f}")
            batch_paths.clear()
            batch_images.clear()
            rows.clear()

        while True:
            while len(pending) < window:
                path = next(remaining, None)
                if path is None:
                    break
                pending.append((path, pool.submit(_decode, path, contract)))
            if not pending:
                break
            path, future = pending.popleft()
            image, error = future.result()
            if error is not None:
                rows.append(_row(path, predictor, reason=error))
                summary.failed += 1
            else:
                batch_paths.append(path)
                batch_images.append(image)
            if len(batch_images) >= batch_size or len(rows) >= batch_size:
                flush()
        flush()
    if bar is not None:
        bar.close()
    summary.seconds = time.perf_counter() - started

    done = {r["path"]: r for r in previous + read_rows(journal)}
    write_output(output, list(done.values()), _columns(predictor.class_names), predictor.name)
    journal.unlink(missing_ok=True)
    return summary
