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
from s3f_edge.results import FILE_MTIME, FILE_SIZE, columns, file_fingerprint, write_results
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
    assert html.count("<tr data-source=") == 2  # one summary row per results file
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


# ---------------------------------------------------------------- several results files; images changed since

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def answered_rows(paths, model: str, sha256: str, threshold: float, shift: int = 0) -> list[dict]:
    """Rows as infer writes them for ``paths`` (ok, each file's size and time as it is now)."""
    rows = []
    for index, path in enumerate(paths):
        top = (index + shift) % len(CLASSES)
        probs = {f"prob_{name}": 0.7 if i == top else 0.1 for i, name in enumerate(CLASSES)}
        rows.append({"path": str(path), "status": "ok", "reason": "", "predicted_class": CLASSES[top], **probs,
                     "ood_score": 1.0 + index, "ood_threshold": threshold, "model": model, "model_sha256": sha256,
                     **file_fingerprint(path)})
    return rows


def image_folder(root: Path, count: int = 6) -> list[Path]:
    folder = root / "images"
    folder.mkdir()
    sources = sorted((REPO / "samples" / "brain_mri" / "test").rglob("*.jpg"))
    return [Path(shutil.copy(image, folder / f"{i}-{image.name}")) for i, image in enumerate(sources[:count])]


def summary_rows(html: str) -> list[str]:
    """The text of each results file's row in the page's summary table."""
    return [re.sub(r"<[^>]+>", " ", row) for row in re.findall(r"<tr data-source=.*?</tr>", html, re.S)]


@pytest.fixture
def two_models(tmp_path) -> tuple[Path, Path, list[Path]]:
    """Two models' results files on the same six images: (a.csv, b.jsonl, images)."""
    images = image_folder(tmp_path)
    first, second = tmp_path / "a.csv", tmp_path / "b.jsonl"
    write_results(first, answered_rows(images, "alpha.onnx", "a1" * 32, 4.606936), CLASSES, "alpha.onnx")
    write_results(second, answered_rows(images, "beta.onnx", "b2" * 32, 5.425835, shift=1), CLASSES, "beta.onnx")
    return first, second, images


def test_two_models_results_files_are_told_apart_in_the_summary(two_models, tmp_path):
    first, second, images = two_models
    page = tmp_path / "both.html"
    result = CliRunner().invoke(main, ["report", str(first), str(second), "--out", str(page), "--quiet"])
    assert result.exit_code == 0, result.output
    html = page.read_text(encoding="utf-8")
    totals = re.search(r'<p id="totals"[^>]*>(.*?)</p>', html).group(1)
    assert totals == "6 files, 12 rows from 2 results files", totals
    described = summary_rows(html)
    assert len(described) == 2
    for text, (path, model, sha, threshold) in zip(described, [(first, "alpha.onnx", "a1" * 6, "4.606936"),
                                                               (second, "beta.onnx", "b2" * 6, "5.425835")]):
        cells = text.split()
        assert str(path) in cells and model in cells and sha in cells and threshold in cells, text
        assert "6" in cells and "a1" * 7 not in text, text  # its row count; the sha256 shortened
    assert [row["source"] for row in page_data(page)["rows"]] == [0] * 6 + [1] * 6


def test_a_results_file_given_twice_is_read_once_and_the_user_told(two_models, tmp_path, monkeypatch):
    first, _, images = two_models
    copy = tmp_path / "copy-of-a.csv"
    copy.write_bytes(first.read_bytes())
    monkeypatch.chdir(tmp_path)
    page = tmp_path / "once.html"
    result = CliRunner().invoke(main, ["report", str(first), str(first), "a.csv", str(copy), "--out", str(page),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "read once" in line]
    assert len(notes) == 3, result.stderr
    assert notes[0] == f"note: {first} was given again: read once, its rows counted once", notes
    assert notes[1].startswith(f"note: a.csv was given again (as {first})"), notes
    assert notes[2].startswith(f"note: {copy} has the same content as {first} (#1)"), notes
    data, html = page_data(page), page.read_text(encoding="utf-8")
    assert len(data["rows"]) == len(images) and len(data["sources"]) == 1
    assert re.search(r'<p id="totals"[^>]*>(.*?)</p>', html).group(1) == "6 files, 6 rows from 1 results file"
    assert html.count('class="given-again"') == 3  # the page says so too, for whoever reads it later


def change_after_answer(tmp_path, monkeypatch) -> tuple[Path, dict[str, Path]]:
    """A results file whose images then changed: one replaced, one touched, one deleted, one locked; one
    unchanged, one that was corrupt when answered. Returns (results.csv, {kind: image})."""
    import s3f_edge.report.thumbnails as thumbnails

    images = image_folder(tmp_path)
    kinds = dict(zip(["same", "replaced", "touched", "deleted", "locked"], images))
    corrupt = images[0].with_name("corrupt.png")
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    kinds["corrupt"] = corrupt
    rows = answered_rows(list(kinds.values())[:-1], "alpha.onnx", "a1" * 32, 4.6)
    rows.append({"path": str(corrupt), "status": "error", "reason": "not a decodable image", "predicted_class": "",
                 **{f"prob_{name}": "" for name in CLASSES}, "ood_score": "", "ood_threshold": "",
                 "model": "alpha.onnx", "model_sha256": "a1" * 32, **file_fingerprint(corrupt)})
    results = tmp_path / "results.csv"
    write_results(results, rows, CLASSES, "alpha.onnx")
    kinds["replaced"].write_bytes(images[5].read_bytes())  # another image under the answered name
    stat = kinds["touched"].stat()
    os.utime(kinds["touched"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 90 * 10**9))  # same bytes, new time
    kinds["deleted"].unlink()
    def read(path):  # the tests run as root, whom file permissions do not stop
        if Path(path) == kinds["locked"]:
            raise PermissionError(13, "Permission denied", str(path))
        return Path(path).read_bytes()

    monkeypatch.setattr(thumbnails, "_read_bytes", read, raising=False)  # the test fails without the reason anyway
    return results, kinds


def test_images_changed_or_gone_after_their_answer_say_so(tmp_path, monkeypatch):
    results, kinds = change_after_answer(tmp_path, monkeypatch)
    page = write_results_report(results, tmp_path / "page.html")
    rows = {Path(row["path"]): row for row in page_data(page)["rows"]}
    state = {kind: (rows[path]["image"], rows[path]["image_note"]) for kind, path in kinds.items()}
    assert state["same"] == ("shown", "") and rows[kinds["same"]]["thumb"].startswith("data:image/jpeg")
    for kind in ("replaced", "touched"):
        image, note = state[kind]
        assert image == "changed" and note.startswith("changed after its answer: answered as "), state[kind]
        assert rows[kinds[kind]]["thumb"], "kept, to be shown only when asked for"
    replaced = kinds["replaced"]
    assert f"now {replaced.stat().st_size:,} bytes" in state["replaced"][1]
    assert state["deleted"] == ("unavailable", "not found (deleted, moved or renamed)")
    assert state["locked"] == ("unavailable", "unreadable: permission denied")
    assert state["corrupt"][0] == "unavailable" and state["corrupt"][1].startswith("not an image or corrupt: ")
    html = page.read_text(encoding="utf-8")
    assert re.search(r'<li id="note-changed"[^>]*>2 of the rows', html)
    assert 'class="no-fingerprints"' not in html


def test_an_older_results_file_cannot_tell_changes_and_says_so_once(tmp_path):
    images = image_folder(tmp_path)
    older = [c for c in columns(CLASSES) if c not in (FILE_SIZE, FILE_MTIME)]
    results = tmp_path / "older.csv"
    write_csv(results, older, answered_rows(images, "alpha.onnx", "a1" * 32, 4.6))
    images[0].write_bytes(images[1].read_bytes())
    page = write_results_report(results, tmp_path / "page.html")
    rows = page_data(page)["rows"]
    assert all(row["image"] == "shown" and row["image_note"] == "" for row in rows), rows  # nothing per row
    assert page.read_text(encoding="utf-8").count('class="no-fingerprints"') == 1


@needs_browser
def test_each_row_names_its_results_file_and_model_and_filters_by_it(browser, two_models, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException

    first, second, images = two_models
    third = tmp_path / "c.json"  # a model name is text from a file, like a path: shown, never run
    write_results(third, answered_rows(images, HOSTILE, "c3" * 32, 3.0), CLASSES, HOSTILE)
    page = write_results_report([first, second, third], tmp_path / "three.html")
    open_page(browser, page)
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#rows tbody tr'), tr => [tr.dataset.source, "
        "tr.querySelector('td.source').textContent])")
    assert len(cells) == 18
    labels = {"0": "#1 a.csvalpha.onnx", "1": "#2 b.jsonlbeta.onnx", "2": "#3 c.json" + HOSTILE}
    for source, text in cells:
        assert text == labels[source], text
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (reading it is the check)
    choose(browser, "filter-source", "1")
    assert int(browser.find_element("id", "shown").get_attribute("data-matching")) == 6
    assert {tr.get_attribute("data-source") for tr in browser.find_elements("css selector", "#rows tbody tr")} == {
        "1"}
    assert all(text.endswith("beta.onnx") for text in
               (cell.text for cell in browser.find_elements("css selector", "#rows td.source")))


@needs_browser
def test_a_changed_image_is_hidden_until_asked_for_and_a_missing_one_says_why(browser, tmp_path, monkeypatch):
    results, kinds = change_after_answer(tmp_path, monkeypatch)
    page = write_results_report(results, tmp_path / "page.html")
    open_page(browser, page)
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []

    def row(kind):
        return browser.find_element("css selector", f"#rows tbody tr[data-path='{kinds[kind]}']")

    replaced = row("replaced")
    picture = replaced.find_element("css selector", "td.image")
    assert picture.find_elements("css selector", "img") == [] and "changed after its answer" in picture.text
    assert "changed after its answer: answered as" in replaced.find_elements("css selector", "td")[2].text
    picture.find_element("css selector", "button.reveal").click()
    assert len(picture.find_elements("css selector", "img")) == 1
    assert "current file, not the one answered" in picture.text
    assert "not found (deleted, moved or renamed)" in row("deleted").find_element("css selector", "td.image").text
    assert "permission denied" in row("locked").find_element("css selector", "td.image").text
    assert "not an image or corrupt" in row("corrupt").find_element("css selector", "td.image").text
    assert len(row("same").find_elements("css selector", "td.image img")) == 1
    choose(browser, "filter-image", "changed")
    assert sorted(table_paths(browser)) == sorted(str(kinds[k]) for k in ("replaced", "touched"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "review-changed-images.png"))


def test_a_relative_path_not_found_says_where_to_write_the_page():
    from s3f_edge.report.results_page import image_state
    from s3f_edge.report.thumbnails import read_thumbnail

    path = "no/such/image.jpg"
    state = image_state({"path": path, FILE_SIZE: "10", FILE_MTIME: "5"}, file_fingerprint(path), read_thumbnail(path))
    assert state == ("unavailable", "not found (deleted, moved or renamed); a relative path: write the page where "
                                    "infer ran")


# ---------------------------------------------------------------- prediction sets

# The sets of the six ok rows of ``set_results``: one class, two, none (an empty set: no class plausible), three.
SETS = [["glioma"], ["glioma", "meningioma"], [], ["pituitary"], ["glioma", "notumor", "pituitary"], []]


def set_results(root: Path, suffix: str = ".csv") -> tuple[Path, list[Path]]:
    """A results file of a model with prediction sets: six ok rows (``SETS``), a refused and an error row (no set,
    empty cells). Returns (the file, the six images)."""
    from s3f_edge.results import ANSWER_SET, SET_SEPARATOR, SET_SIZE

    images = image_folder(root)
    rows = [{**row, ANSWER_SET: SET_SEPARATOR.join(members), SET_SIZE: len(members)}
            for row, members in zip(answered_rows(images, "alpha.onnx", "a1" * 32, 4.6), SETS)]
    rows.append({**rows[0], "path": str(root / "refused.jpg"), "status": "refused", "predicted_class": "",
                 ANSWER_SET: "", SET_SIZE: ""})
    rows.append({**rows[0], "path": str(root / "broken.jpg"), "status": "error", "reason": "not a decodable image",
                 "predicted_class": "", **{f"prob_{name}": "" for name in CLASSES}, ANSWER_SET: "", SET_SIZE: ""})
    results = root / f"sets{suffix}"
    write_results(results, rows, CLASSES, "alpha.onnx")
    return results, images


def test_prediction_sets_reach_the_page_and_its_summary(tmp_path):
    results, images = set_results(tmp_path, ".jsonl")  # JSON: sizes as numbers; the CSV of the browser test: text
    page = write_results_report(results, tmp_path / "page.html")
    rows = {row["path"]: row for row in page_data(page)["rows"]}
    assert [(rows[str(p)]["set"], rows[str(p)]["set_size"]) for p in images] == [(s, len(s)) for s in SETS]
    assert rows[str(tmp_path / "refused.jpg")]["set"] is None and rows[str(tmp_path / "broken.jpg")]["set"] is None
    html = page.read_text(encoding="utf-8")
    counts = {key: re.search(rf'<td class="set-count" id="count-set-{key}">(\d+)</td>', html).group(1)
              for key in ("one", "several", "empty")}
    assert counts == {"one": "2", "several": "2", "empty": "2"}, counts
    assert 'id="filter-set"' in html


def test_results_without_sets_render_without_set_columns_or_filter(tmp_path):
    """An older results file has no set columns at all; a model without sets writes them empty: neither page shows
    a set, a set count or the set filter."""
    from s3f_edge.results import ANSWER_SET, SET_SIZE

    images = image_folder(tmp_path)
    older = tmp_path / "older.csv"
    write_csv(older, [c for c in columns(CLASSES) if c not in (ANSWER_SET, SET_SIZE)],
              answered_rows(images, "alpha.onnx", "a1" * 32, 4.6))
    assert ANSWER_SET not in rows_of(older)[0]
    empty = tmp_path / "no-sets.csv"
    write_results(empty, answered_rows(images, "alpha.onnx", "a1" * 32, 4.6), CLASSES, "alpha.onnx")
    for results in (older, empty):
        page = write_results_report(results, tmp_path / f"{results.stem}.html")
        assert all(row["set"] is None and row["set_size"] is None for row in page_data(page)["rows"])
        html = page.read_text(encoding="utf-8")
        assert 'id="filter-set"' not in html and 'class="set-count"' not in html


@needs_browser
def test_each_ok_row_shows_its_set_and_the_set_filter_picks_by_size(browser, tmp_path):
    results, images = set_results(tmp_path)
    page = write_results_report(results, tmp_path / "sets.html")
    open_page(browser, page)
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []

    def set_texts() -> dict[str, list[str]]:
        """Each shown row's path: the texts of its set element(s), and the class names of those."""
        return browser.execute_script(
            "return Object.fromEntries(Array.from(document.querySelectorAll('#rows tbody tr'), tr => [tr.dataset.path, "
            "Array.from(tr.querySelectorAll('td.answer .set'), e => [e.className, e.textContent])]))")

    shown = set_texts()
    for path, members in zip(images, SETS):
        assert len(shown[str(path)]) == 1, (path, shown[str(path)])  # one set per ok row
        ((kind, text),) = shown[str(path)]
        if members:
            assert kind == "set" and text == "set: " + ", ".join(members), (path, text)
        else:
            assert kind == "set set-empty" and text == "no class plausible (empty set)", (path, text)
            assert not any(name in text for name in CLASSES), text  # never a class, though the answer keeps one
    assert shown[str(tmp_path / "refused.jpg")] == [] and shown[str(tmp_path / "broken.jpg")] == []

    def by_size(wanted: str) -> list[str]:
        choose(browser, "filter-set", wanted)
        return sorted(every_page(browser))

    expected = {"0": [p for p, s in zip(images, SETS) if not s], "1": [p for p, s in zip(images, SETS) if len(s) == 1],
                "2+": [p for p, s in zip(images, SETS) if len(s) >= 2]}
    for wanted, paths in expected.items():
        assert paths and by_size(wanted) == sorted(map(str, paths)), wanted
    assert {tr.get_attribute("data-set-size") for tr in browser.find_elements("css selector", "#rows tbody tr")} == {
        "2", "3"}
    choose(browser, "filter-status", "refused")
    assert table_paths(browser) == []  # a refused row has no set: no set size matches it
    choose(browser, "filter-status", "")
    assert len(by_size("")) == len(images) + 2
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "review-prediction-sets.png"))
