"""How a review page of a large batch behaves: 10,000 files through `infer`, then its page written and opened.

The files are hard links to the sample images (copies on disk, cycling through the 72 samples). One run
measures, on this machine: `infer` alone, writing the page (thumbnails included) as a ratio of it, the page's
size, and in headless Chromium the time from navigation to the first rows drawn, then filtering and sorting
all rows. The page holds every row's data but puts one page of 100 rows in the document at a time.

    .venv/bin/python benchmarks/review_page.py --out benchmarks/results
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from files_benchmark import link_samples, run_files_benchmark  # noqa: E402  (benchmarks/ is the script's folder)

from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR  # noqa: E402

# Filtering and sorting, done as a user does them (a select's change event), timed inside the page.
TIME_CONTROL = """
const [id, value] = arguments;
const control = document.getElementById(id);
const start = performance.now();
control.value = value;
control.dispatchEvent(new Event('change'));
return [performance.now() - start, Number(document.getElementById('shown').dataset.matching),
        document.querySelectorAll('#rows tbody tr').length];
"""


def measure(files: int) -> dict:
    from s3f_edge.report.results_page import write_results_report
    from s3f_edge.runtime import infer_folder, load_predictor
    from s3f_edge.testing import browser_missing, headless_chromium

    reason = browser_missing()
    if reason:
        raise SystemExit(f"cannot open the page: {reason}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "batch"
        folder.mkdir()
        link_samples(folder, files)
        predictor = load_predictor(DEFAULT_MODEL_DIR / "model.onnx")
        started = time.perf_counter()
        summary = infer_folder(folder, predictor, scratch / "results.csv", progress=False)
        infer_seconds = time.perf_counter() - started
        started = time.perf_counter()
        page = write_results_report(scratch / "results.csv", scratch / "review.html")
        page_seconds = time.perf_counter() - started
        driver = headless_chromium()
        try:
            started = time.perf_counter()
            driver.get(page.as_uri())
            driver.find_element("css selector", "body[data-ready=yes]")
            open_seconds = time.perf_counter() - started
            ready_ms = float(driver.find_element("tag name", "body").get_attribute("data-ready-ms"))
            in_document = len(driver.find_elements("css selector", "#rows tbody tr"))
            refused_ms, refused, _ = driver.execute_script(TIME_CONTROL, "filter-status", "refused")
            all_ms, matching, _ = driver.execute_script(TIME_CONTROL, "filter-status", "")
            sort_ms, _, _ = driver.execute_script(TIME_CONTROL, "sort", "confidence-desc")
        finally:
            driver.quit()
        return {
            "files": files, "rows": matching, "refused_rows": refused, "rows_in_document": in_document,
            "infer_seconds": infer_seconds, "page_seconds": page_seconds,
            "page_over_infer": page_seconds / infer_seconds, "page_mb": page.stat().st_size / 1e6,
            "csv_mb": (scratch / "results.csv").stat().st_size / 1e6,
            "browser_open_seconds": open_seconds, "first_rows_ms": ready_ms, "filter_refused_ms": refused_ms,
            "filter_all_ms": all_ms, "sort_confidence_ms": sort_ms, "answered": summary.succeeded + summary.refused,
        }


def table(result: dict) -> list[str]:
    return [
        f"| {result['files']:,} files (bundled model, ONNX) | measured |",
        "|---|---|",
        f"| `infer` alone | {result['infer_seconds']:.1f} s |",
        f"| writing the page (thumbnails included) | {result['page_seconds']:.1f} s "
        f"({result['page_over_infer']:.2f}× the `infer` time) |",
        f"| page size (results CSV: {result['csv_mb']:.1f} MB) | {result['page_mb']:.1f} MB |",
        f"| Chromium: navigation to the first 100 rows drawn | {result['first_rows_ms']:.0f} ms |",
        f"| rows in the document at a time / on the page | {result['rows_in_document']} / {result['rows']:,} |",
        f"| filter to refused ({result['refused_rows']:,} rows) / back to all | {result['filter_refused_ms']:.0f} ms / "
        f"{result['filter_all_ms']:.0f} ms |",
        f"| sort all rows by confidence | {result['sort_confidence_ms']:.0f} ms |",
    ]


def main() -> None:
    run_files_benchmark(__doc__.splitlines()[0], "review_page", measure, table)


if __name__ == "__main__":
    main()
