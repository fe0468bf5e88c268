"""The review pages (`infer --report`, `s3f-edge report`, `evaluate --report`): built from real results, then
opened in a real headless Chromium from file:// — no string matching on the HTML for what the page does."""
import base64
import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3f_edge.cli import main
from s3f_edge.errors import InputError, MissingFileError, OutputExistsError
from s3f_edge.outputs import read_csv, write_csv
from s3f_edge.report.results_page import classes_of, page_rows, summary, write_results_report
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR
from s3f_edge.testing import BROWSER_ENV, browser_missing

REPO = Path(__file__).resolve().parent.parent
HOSTILE = "<img src=x onerror=alert(1)>.png"
UNICODE = "übersicht 画像 ščř.png"
# Where screenshots go for a person to look at (kept after the run; .gitignore'd).
SHOTS = Path(os.environ.get("S3F_EDGE_TEST_OUTPUT", REPO / "test-output"))


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """A folder like a real batch: brain MRI images, three ultrasound images (refused), and files that cannot be
    answered or have hostile or non-ASCII names."""
    folder = tmp_path_factory.mktemp("batch") / "incoming"
    folder.mkdir()
    for image in sorted((REPO / "samples" / "brain_mri" / "test").rglob("*.jpg"))[::2]:
        shutil.copy(image, folder / f"{image.parent.name}-{image.name}")
    for image in sorted((REPO / "samples" / "ultrasound" / "images").glob("*.png")):
        shutil.copy(image, folder / f"ultrasound-{image.name}")
    test = REPO / "samples" / "brain_mri" / "test"
    shutil.copy(sorted((test / "glioma").glob("*.jpg"))[-1], folder / HOSTILE)
    shutil.copy(sorted((test / "pituitary").glob("*.jpg"))[-1], folder / UNICODE)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def results(batch, tmp_path_factory) -> tuple[Path, Path]:
    """`s3f-edge infer --report` on the batch with the bundled model: (results.csv, review.html)."""
    out = tmp_path_factory.mktemp("review")
    csv_path, page = out / "results.csv", out / "review.html"
    result = CliRunner().invoke(main, ["infer", str(batch), "--model", str(DEFAULT_MODEL_DIR / "model.onnx"),
                                       "--out", str(csv_path), "--report", str(page), "--quiet"])
    assert result.exit_code == 3, result.output  # the corrupt, empty and text files are error rows
    assert page.is_file() and "review page:" in result.output
    return csv_path, page


def rows_of(csv_path: Path) -> list[dict]:
    return read_csv(csv_path)


def page_data(page: Path) -> dict:
    """The rows and classes a page embeds (what its script draws)."""
    import json

    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                                page.read_text(encoding="utf-8"), re.S).group(1))


# ---------------------------------------------------------------- without a browser: the page's data and safety


def test_the_batch_has_every_kind_of_row(results):
    rows = rows_of(results[0])
    statuses = {row["status"] for row in rows}
    assert statuses == {"ok", "refused", "error"}, statuses
    assert {Path(row["path"]).name for row in rows} >= {HOSTILE, UNICODE, "corrupt.png", "notes.txt"}


def test_page_rows_parse_numbers_and_keep_every_row(results):
    rows = rows_of(results[0])
    classes = classes_of(rows)
    assert classes == ["glioma", "meningioma", "notumor", "pituitary"]
    parsed = page_rows(rows, classes, [None] * len(rows))
    assert len(parsed) == len(rows)
    for row, page_row in zip(rows, parsed):
        if row["status"] == "error":
            assert page_row["probs"] is None and page_row["confidence"] is None
        else:
            assert all(0.0 <= p <= 1.0 for p in page_row["probs"])
            assert page_row["confidence"] == max(page_row["probs"])
            assert page_row["predicted"] == (page_row["top"] if row["status"] == "ok" else "")
    counts = summary(rows, classes)
    assert counts["ok"] + counts["refused"] + counts["error"] == counts["total"] == len(rows)


def test_the_page_allows_only_its_own_inline_code(results):
    """The Content-Security-Policy names the sha256 of the page's one style and one script, and nothing else."""
    html = results[1].read_text(encoding="utf-8")
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1).replace("&#39;", "'")
    assert "default-src 'none'" in policy and "img-src data:" in policy
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1

    def digest(text):
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert f"style-src {digest(style)}" in policy and f"script-src {digest(scripts[0])}" in policy
    assert not re.search(r"(src|href)=\"(https?:|//)", html), "a reference outside the file"


def test_page_and_report_refuse_what_they_should(results, tmp_path):
    csv_path, page = results
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_results_report(csv_path, page)
    with pytest.raises(InputError, match=r"\.html"):
        write_results_report(csv_path, tmp_path / "review.txt")
    with pytest.raises(MissingFileError, match="no results file"):
        write_results_report(tmp_path / "gone.csv", tmp_path / "r.html")
    empty = tmp_path / "empty.csv"
    write_csv(empty, ["path", "status"], [])
    with pytest.raises(InputError, match="holds no rows"):
        write_results_report(empty, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_report_command_rebuilds_the_page_from_a_results_file(results, tmp_path):
    csv_path, _ = results
    page = tmp_path / "again.html"
    result = CliRunner().invoke(main, ["report", str(csv_path), "--out", str(page), "--quiet"])
    assert result.exit_code == 0, result.output
    rebuilt, original = page_data(page), page_data(results[1])
    assert len(rebuilt["rows"]) == len(rows_of(csv_path)) and rebuilt == original


# ---------------------------------------------------------------- in a real browser

needs_browser = pytest.mark.skipif(
    browser_missing() is not None and not os.environ.get(BROWSER_ENV),
    reason=f"no browser: {browser_missing()} (make test installs one)")


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason:  # reached only when BROWSER_ENV demands the browser tests
        pytest.fail(f"{BROWSER_ENV} is set but {reason}")
    from s3f_edge.testing import headless_chromium

    driver = headless_chromium()
    yield driver
    driver.quit()


def open_page(driver, page: Path):
    from s3f_edge.testing import network_requests

    driver.get(page.resolve().as_uri())
    driver.find_element("css selector", "body[data-ready=yes]")  # the page's script ran to its end
    return network_requests(driver)


def table_paths(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows tbody tr'), tr => tr.dataset.path)")


def choose(driver, element_id: str, value: str):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", element_id)).select_by_value(value)


def every_page(driver) -> list[str]:
    """The paths of every row, page after page (the next button until it is disabled)."""
    seen = table_paths(driver)
    button = driver.find_element("id", "next")
    while button.is_enabled():
        button.click()
        seen += table_paths(driver)
    return seen


@needs_browser
def test_opens_from_file_with_no_console_error_and_no_request(browser, results):
    page = results[1]
    requests = open_page(browser, page)
    outside = [url for url in requests if url != page.resolve().as_uri() and not url.startswith("data:")]
    assert outside == [], f"the page asked for {outside}"
    console = browser.get_log("browser")
    assert [entry for entry in console if entry["level"] in ("SEVERE", "WARNING")] == [], console
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "review-first-screen.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


@needs_browser
def test_every_row_of_the_results_file_is_on_the_page(browser, results):
    csv_path, page = results
    open_page(browser, page)
    expected = sorted(row["path"] for row in rows_of(csv_path))
    assert int(browser.find_element("id", "shown").get_attribute("data-matching")) == len(expected)
    assert sorted(every_page(browser)) == expected


@needs_browser
def test_filtering_by_refused_shows_exactly_the_refused_rows(browser, results):
    csv_path, page = results
    open_page(browser, page)
    choose(browser, "filter-status", "refused")
    refused = sorted(row["path"] for row in rows_of(csv_path) if row["status"] == "refused")
    assert refused, "the batch must hold refused rows for this test to mean anything"
    assert sorted(every_page(browser)) == refused
    assert {tr.get_attribute("data-status") for tr in browser.find_elements("css selector", "#rows tbody tr")} == {
        "refused"}


@needs_browser
def test_sorting_by_confidence_orders_the_rows(browser, results):
    csv_path, page = results
    open_page(browser, page)
    choose(browser, "sort", "confidence-desc")
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#rows tbody tr'), tr => tr.dataset.confidence)")
    answered = [float(c) for c in cells if c]
    assert len(answered) >= 10 and answered == sorted(answered, reverse=True)
    assert all(c == "" for c in cells[len(answered):]), "rows without a confidence come last"
    choose(browser, "sort", "confidence-asc")
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#rows tbody tr'), tr => tr.dataset.confidence)")
    answered = [float(c) for c in cells if c]
    assert answered == sorted(answered)


@needs_browser
def test_a_hostile_file_name_is_text_and_runs_nothing(browser, results):
    from selenium.common.exceptions import NoAlertPresentException

    _, page = results
    open_page(browser, page)
    shown = [cell.text for cell in browser.find_elements("css selector", "#rows td.path")]
    assert any(text.endswith(HOSTILE) for text in shown), shown
    assert any(text.endswith(UNICODE) for text in shown), shown
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (reading it is the check)


@needs_browser
def test_keyboard_moves_through_rows_and_pages(browser, results, tmp_path):
    """250 rows: three pages of at most 100 in the document; j/k move the selection, n/p turn pages."""
    from selenium.webdriver.common.action_chains import ActionChains

    csv_path, _ = results
    rows = rows_of(csv_path)
    many = [{**rows[i % len(rows)], "path": f"{i:04d}-{Path(rows[i % len(rows)]['path']).name}"} for i in range(250)]
    big = tmp_path / "many.csv"
    write_csv(big, list(rows[0]), many)
    page = write_results_report(big, tmp_path / "many.html")
    open_page(browser, page)
    assert len(table_paths(browser)) == 100

    def selected():
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('#rows tbody tr')).findIndex(tr => "
            "tr.classList.contains('selected'))")

    keys = ActionChains(browser)
    keys.send_keys("j").send_keys("j").send_keys("j").send_keys("k").perform()
    assert selected() == 1
    ActionChains(browser).send_keys("n").perform()
    assert table_paths(browser)[0].startswith("0100-") and "page 2 of 3" in browser.find_element("id", "shown").text
    ActionChains(browser).send_keys("n").perform()
    assert len(table_paths(browser)) == 50
    ActionChains(browser).send_keys("p").send_keys("p").perform()
    assert table_paths(browser)[0].startswith("0000-")


@needs_browser
def test_evaluation_page_opens_its_confusion_cells_onto_their_images(browser, tmp_path):
    import json

    page = tmp_path / "evaluation.html"
    result = CliRunner().invoke(main, ["evaluate", str(DEFAULT_MODEL_DIR / "model.onnx"),
                                       str(REPO / "samples" / "brain_mri" / "test"), "--out", str(tmp_path / "e"),
                                       "--report", str(page), "--ood", str(REPO / "samples" / "ultrasound" / "images"),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["metrics"]
    requests = open_page(browser, page)
    assert [u for u in requests if u != page.resolve().as_uri() and not u.startswith("data:")] == []
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    cells = browser.find_elements("css selector", "#confusion td.cell")
    matrix = metrics["confusion_matrix"]
    assert [int(cell.text) for cell in cells] == [count for row in matrix for count in row]
    for cell in cells[:: len(matrix) + 1][:2]:  # two diagonal cells: every image of the cell appears
        cell.click()
        assert len(browser.find_elements("css selector", "#cell-gallery figure")) == int(cell.text)
    wrong = metrics["count"] - sum(matrix[i][i] for i in range(len(matrix)))
    assert len(browser.find_elements("css selector", "#worst-errors figure")) == min(16, wrong)
    assert len(browser.find_elements("css selector", ".plots img")) == 2  # ROC and reliability, embedded
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "evaluation-first-screen.png"))


def test_several_results_files_share_one_page_only_with_the_same_classes(results, tmp_path):
    csv_path, _ = results
    rows = rows_of(csv_path)
    second = tmp_path / "second.csv"
    write_csv(second, list(rows[0]), [{**row, "path": row["path"] + ".copy"} for row in rows[:3]])
    page = write_results_report([csv_path, second], tmp_path / "both.html")
    html = page.read_text(encoding="utf-8")
    assert html.count("<dt>Results file</dt>") == 2
    assert f'<td id="count-total">{len(rows) + 3}</td>' in html
    other = tmp_path / "other.csv"
    renamed = [{("prob_tumour" if key == "prob_glioma" else key): value for key, value in row.items()} for row in rows]
    write_csv(other, list(renamed[0]), renamed)
    with pytest.raises(InputError, match="classes"):
        write_results_report([csv_path, other], tmp_path / "mixed.html")


def test_a_run_whose_explain_classes_match_no_image_still_gets_its_page(tmp_path):
    csv_path, page, cams = tmp_path / "r.csv", tmp_path / "r.html", tmp_path / "cams"
    result = CliRunner().invoke(main, ["infer", str(REPO / "samples" / "brain_mri" / "test" / "glioma"), "--model",
                                       str(DEFAULT_MODEL_DIR / "model.keras"), "--out", str(csv_path), "--explain",
                                       str(cams), "--explain-classes", "pituitary", "--report", str(page), "--quiet"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "pituitary" not in {row["predicted_class"] for row in rows_of(csv_path)}  # so no overlay was written
    data = page_data(page)
    assert len(data["rows"]) == 6 and all(row["overlay"] is None for row in data["rows"])


def test_overlays_sit_beside_their_images_and_resume_redraws_the_page(batch, tmp_path):
    csv_path, page, cams = tmp_path / "r.csv", tmp_path / "r.html", tmp_path / "cams"
    argv = ["infer", str(batch), "--model", str(DEFAULT_MODEL_DIR / "model.keras"), "--out", str(csv_path),
            "--explain", str(cams), "--report", str(page), "--quiet"]
    assert CliRunner().invoke(main, argv).exit_code == 3
    data = page_data(page)
    answered = [row for row in data["rows"] if row["probs"] is not None]
    assert answered and all(row["overlay"].startswith("data:image/jpeg;base64,") for row in answered)
    assert all(row["overlay"] is None for row in data["rows"] if row["probs"] is None)
    before = page.stat().st_mtime_ns
    result = CliRunner().invoke(main, [*argv, "--resume"])
    assert result.exit_code == 3, result.output  # the same error rows, now from the earlier run
    assert page.stat().st_mtime_ns > before
    result = CliRunner().invoke(main, ["infer", str(batch), "--out", str(tmp_path / "other.csv"), "--report",
                                       str(page), "--quiet"])
    assert result.exit_code == 1 and "--overwrite" in result.stderr  # a page is never silently replaced
    assert not (tmp_path / "other.csv").exists()
