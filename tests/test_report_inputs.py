"""`s3f-edge report` on results files that s3f-edge did not write as they are: every one is a one-line error,
exit 1, naming the file (and the line, where the file has lines) and saying to give a results file of infer;
never a traceback, never infer's advice about --out. A file that only looks odd but is fine (a spreadsheet's
byte-order mark, JSON nulls) gets its page."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from s3f_edge.cli import main

REPO = Path(__file__).resolve().parent.parent
IMAGE = sorted((REPO / "samples" / "brain_mri" / "test" / "glioma").glob("*.jpg"))[0]
HEADER = "path,status,reason,predicted_class,prob_a,prob_b,ood_score,ood_threshold,model,model_sha256"
GOOD = f"{IMAGE},ok,,a,0.9,0.1,1.5,4.6,m.onnx,{'ab' * 32}"
ROW = {"path": str(IMAGE), "status": "ok", "reason": "", "predicted_class": "a", "prob_a": 0.9, "prob_b": 0.1,
       "ood_score": 1.5, "ood_threshold": 4.6, "model": "m.onnx", "model_sha256": "ab" * 32}

# name -> (the file's text, what the one-line message must hold besides the file's path)
BROKEN = {
    "missing-cells.csv": (f"{HEADER}\n{GOOD}\n{IMAGE},ok,,a,0.9\n", "line 3"),
    "extra-cells.csv": (f"{HEADER}\n{GOOD},surplus\n", "line 2"),
    "no-status.csv": ("path,prob_a,prob_b\nx.jpg,0.9,0.1\n", "no status column"),
    "bad-status.csv": (f"{HEADER}\n{GOOD.replace(',ok,', ',fine,')}\n", "line 2"),
    "results-five.json": ('{"results": 5}', "no list of results"),
    "results-not-rows.json": ('{"results": [5]}', "row 1"),
    "a-list.json": (json.dumps([ROW]), "no list of results"),
    "broken.json": ('{"results": [', "line 1"),
    "corrupt-line.jsonl": (f"{json.dumps(ROW)}\n{{\"path\": \"y.jpg\", \"sta\n{json.dumps(ROW)}\n", "line 2"),
    "no-path.jsonl": (json.dumps({k: v for k, v in ROW.items() if k != "path"}) + "\n", "line 1"),
}


def report(*argv) -> Result:
    return CliRunner().invoke(main, ["report", *map(str, argv), "--quiet"])


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_results_file_is_one_line_naming_file_and_line(tmp_path, name):
    text, where = BROKEN[name]
    results = tmp_path / name
    results.write_text(text, encoding="utf-8")
    result = report(results, "--out", tmp_path / "page.html")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert str(results) in lines[0] and where in lines[0], lines[0]
    assert "give a results file that s3f-edge infer wrote" in lines[0], lines[0]
    assert "choose another" not in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "page.html").exists()


def test_a_results_file_with_bytes_that_are_not_utf8_gets_a_valid_page(tmp_path):
    """A file name that is not valid UTF-8 (one from another system) is a name all the same: infer writes it as its
    bytes, so a CSV holding such bytes is read as written, and the page shows them as U+FFFD."""
    results = tmp_path / "latin1.csv"
    results.write_bytes(f"{HEADER}\n{GOOD.replace('m.onnx', 'mé.onnx')}\n".encode("latin-1"))
    result = report(results, "--out", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    assert "m\ufffd.onnx" in (tmp_path / "page.html").read_bytes().decode("utf-8")


def test_a_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_gets_its_page(tmp_path):
    results = tmp_path / "excel.csv"
    results.write_text(f"\ufeff{HEADER}\n{GOOD}\n", encoding="utf-8")
    result = report(results, "--out", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "page.html").is_file()


def test_json_nulls_are_empty_cells_not_a_traceback(tmp_path):
    """JSON results edited or merged by other tools may hold null where infer wrote text."""
    results = tmp_path / "nulls.json"
    rows = [ROW, {**ROW, "path": str(IMAGE.with_name("other.jpg")), "model": None, "model_sha256": None,
                  "reason": None, "predicted_class": None, "ood_threshold": None}]
    results.write_text(json.dumps({"model": "m.onnx", "results": rows}), encoding="utf-8")
    result = report(results, "--out", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_results_without_probabilities_or_rows_say_what_to_give(tmp_path):
    empty, bare = tmp_path / "empty.csv", tmp_path / "bare.csv"
    empty.write_text(HEADER + "\n")
    bare.write_text(f"path,status\n{IMAGE},ok\n")
    for results, what in ((empty, "holds no rows"), (bare, "no probability columns")):
        result = report(results, "--out", tmp_path / "page.html")
        assert result.exit_code == 1 and what in result.stderr and str(results) in result.stderr, result.stderr
        assert "give a results file that s3f-edge infer wrote" in result.stderr


def test_a_path_no_file_can_have_is_a_row_without_a_picture(tmp_path):
    """JSON can name what no file system can (a NUL, a lone surrogate): the row says it is unreadable."""
    results = tmp_path / "odd.json"
    rows = [{**ROW, "path": "a\u0000b.jpg"}, {**ROW, "path": "c\ud800d.jpg"}]
    results.write_text(json.dumps({"model": "m.onnx", "results": rows}), encoding="utf-8")
    page = tmp_path / "page.html"
    result = report(results, "--out", page)
    assert result.exit_code == 0, (result.output, result.exception)
    assert page.is_file()


def test_a_long_name_in_many_bytes_has_an_overlay_name_the_system_takes(tmp_path):
    from s3f_edge.results import overlay_name

    name = "脑" * 80 + ".jpg"  # 244 bytes: with a digest and a class, too long for a file name unless clipped
    image = tmp_path / name
    image.write_bytes(IMAGE.read_bytes())
    assert len(overlay_name(image, "a" * 200).encode("utf-8")) <= 255
    overlays = tmp_path / "ov"
    overlays.mkdir()
    (overlays / overlay_name(image, "a")).write_bytes((REPO / "docs" / "images" / "review.png").read_bytes())
    results = tmp_path / "r.csv"
    results.write_text(f"{HEADER}\n{GOOD.replace(str(IMAGE), str(image))}\n", encoding="utf-8")
    result = report(results, "--explain", overlays, "--out", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
