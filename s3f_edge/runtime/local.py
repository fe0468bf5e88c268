"""The inference loop's executor on this machine (files decoded in a thread pool ahead of the model), and
``infer_folder``, the Python API's way to run it.

Decoding runs through a bounded window of futures, so memory holds at most a few batches of pixels whatever
the folder size; each batch is one model call, and (with ``--explain``) one Grad-CAM pass over the same pixels.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from s3f_edge.runtime.answers import answer_batch, make_row
from s3f_edge.runtime.infer import InferOptions, InferPlan, InferSummary, run_inference
from s3f_edge.runtime.inputs import decode_file


class LocalExecutor:
    """Answers the planned files here: ``workers`` decoding threads, ``batch_size`` images per model call.

    Args:
        predictor: the loaded ``Predictor``.
        options: the run's ``InferOptions`` (batch size, workers, Grad-CAM folder and classes).
    """

    label = "infer"
    job = "the run"
    shows_rate = True
    sound_when = "the cause is fixed"

    def __init__(self, predictor, options: InferOptions):
        self.predictor, self.batch_size, self.workers = predictor, options.batch_size, options.workers
        self.explain_dir, self.explain_classes = options.explain_dir, options.explain_classes

    def _explainer(self):
        """Grad-CAM, loaded only when the run has files to answer (it builds a Keras model)."""
        if self.explain_dir is None:
            return None
        from s3f_edge.runtime.gradcam import GradCam

        return GradCam(self.predictor, self.explain_dir, self.explain_classes)

    def session(self, plan: InferPlan):
        """Nothing to set up on this machine."""
        return nullcontext()

    def batches(self, plan: InferPlan) -> Iterator[list[dict]]:
        """Rows for ``plan.files``, a batch at a time, in the listing's order."""
        explainer = self._explainer()
        contract = self.predictor.contract
        window = max(2 * self.batch_size, 2 * self.workers)  # decoded-but-unconsumed images held at most
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            pending: deque = deque()
            remaining = iter(plan.files)
            paths, images, fingerprints, rows = [], [], [], []
            while True:
                while len(pending) < window and (path := next(remaining, None)) is not None:
                    pending.append((path, pool.submit(decode_file, path, contract)))
                if not pending:
                    break
                path, future = pending.popleft()
                decoded = future.result()
                if decoded.error is not None:
                    rows.append(make_row(path, self.predictor, decoded.fingerprint, reason=decoded.error))
                else:
                    paths.append(path)
                    images.append(decoded.image)
                    fingerprints.append(decoded.fingerprint)
                if len(images) >= self.batch_size or len(rows) >= self.batch_size:
                    yield self._answer(plan, paths, images, fingerprints, rows, explainer)
                    paths, images, fingerprints, rows = [], [], [], []
            if images or rows:
                yield self._answer(plan, paths, images, fingerprints, rows, explainer)

    def _answer(self, plan: InferPlan, paths: list, images: list, fingerprints: list, rows: list,
                explainer) -> list[dict]:
        """The rows of one batch: the files that had no image, then the model's answers to the others."""
        if images:
            batch = np.stack(images)
            answered, probabilities = answer_batch(self.predictor, paths, batch, plan.threshold, fingerprints)
            rows = rows + answered
            if explainer is not None:
                explainer.explain(paths, batch, probabilities)
        return rows


def infer_folder(folder: str | Path, predictor, output: str | Path, batch_size: int = 32, recursive: bool = False,
                 workers: int = 4, resume: bool = False, progress: bool = True, explain_dir: Path | None = None,
                 explain_classes: set[str] | None = None, overwrite: bool = False,
                 log: Callable[[str], None] | None = None, accept_ood: bool = False,
                 ood_threshold: float | None = None) -> InferSummary:
    """Classify every file under ``folder`` with ``predictor`` on this machine; write one row per file to ``output``.

    Example:
        >>> from s3f_edge.runtime import infer_folder, load_predictor
        >>> summary = infer_folder("scans/", load_predictor("deploy/model.onnx"), "results.csv")  # doctest: +SKIP

    Args:
        folder, output, batch_size, recursive, workers, resume, progress, explain_dir, explain_classes, overwrite,
        accept_ood, ood_threshold: as ``InferOptions``.
        predictor: a loaded ``Predictor``.
        log: called with lines describing the run, after every check passed.

    Returns:
        The counts and timing (``InferSummary``).

    Raises:
        What ``plan_inference`` raises, before any work.
    """
    options = InferOptions(Path(folder), Path(output), batch_size=batch_size, recursive=recursive, workers=workers,
                           resume=resume, overwrite=overwrite, accept_ood=accept_ood, ood_threshold=ood_threshold,
                           explain_dir=explain_dir, explain_classes=explain_classes, progress=progress)
    return run_inference(options, predictor, LocalExecutor(predictor, options), log)
