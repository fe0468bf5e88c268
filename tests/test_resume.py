"""What `infer --resume` keeps and what it answers again: the model, the folder and each file's content are
checked; a resume after an interrupted --overwrite keeps nothing of the run that --overwrite replaced; every
sub-folder and file is accounted for, and the messages say what actually happened."""
import json
import os
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from s3f_edge.cli import main
from s3f_edge.errors import InputError
from s3f_edge.results import FILE_MTIME, FILE_SIZE, file_fingerprint, read_journal, read_results
from s3f_edge.runtime import infer_folder, load_predictor
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parent.parent
MODEL = DEFAULT_MODEL_DIR / "model.onnx"
SAMPLES = sorted((REPO / "samples" / "brain_mri" / "test").rglob("*.jpg"))


class InterruptedAfter:
    """A predictor that is interrupted (Ctrl-C) at its ``calls``-th model call: what a user's Ctrl-C does mid-run."""

    def __init__(self, predictor, calls: int):
        self._predictor, self._left = predictor, calls

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def predict_scored(self, batch):
        self._left -= 1
        if self._left <= 0:
            raise KeyboardInterrupt
        return self._predictor.predict_scored(batch)


@pytest.fixture(scope="module")
def bundled():
    return load_predictor(MODEL)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """The bundled graph in another file (another sha256): "another model" for the checks."""
    path = tmp_path_factory.mktemp("other") / "other.onnx"
    changed = onnx.load(str(MODEL))
    changed.doc_string = "the same graph in another file"
    onnx.save(changed, str(path))
    return load_predictor(path)


def fill(folder: Path, images: list[Path], count: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        shutil.copy(images[index % len(images)], folder / f"{index:02d}.jpg")
    return folder


def replace_images(folder: Path) -> None:
    """New content in every file (other sample images, so other sizes and answers)."""
    for index, path in enumerate(sorted(folder.glob("*.jpg"))):
        shutil.copy(SAMPLES[-1 - index % len(SAMPLES)], path)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10_000_000_000))


def fresh_answers(folder: Path, predictor, tmp_path: Path) -> dict:
    out = tmp_path / "fresh.csv"
    infer_folder(folder, predictor, out, progress=False, overwrite=True)
    return {row["path"]: row for row in read_results(out)}


def same_answers(rows: list[dict], expected: dict) -> None:
    assert sorted(row["path"] for row in rows) == sorted(expected)
    for row in rows:
        want = expected[row["path"]]
        for column in ("status", "predicted_class", "model_sha256", FILE_SIZE, FILE_MTIME):
            assert str(row[column]) == str(want[column]), (row["path"], column)


def test_rows_record_each_file_as_it_was_answered(bundled, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES, 3)
    infer_folder(folder, bundled, tmp_path / "r.csv", progress=False)
    for row in read_results(tmp_path / "r.csv"):
        now = file_fingerprint(row["path"])
        assert int(row[FILE_SIZE]) == now[FILE_SIZE] > 0 and int(row[FILE_MTIME]) == now[FILE_MTIME]


def test_resume_after_an_interrupted_overwrite_keeps_no_row_of_the_replaced_run(bundled, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES)
    out = tmp_path / "r.csv"
    infer_folder(folder, bundled, out, progress=False)
    replace_images(folder)
    with pytest.raises(KeyboardInterrupt):
        infer_folder(folder, InterruptedAfter(bundled, 3), out, batch_size=2, overwrite=True, progress=False)
    assert len(read_journal(out.with_name(".r.csv.partial.jsonl"))[1]) == 4  # two batches answered
    summary = infer_folder(folder, bundled, out, batch_size=2, resume=True, progress=False)
    assert summary.skipped_as_done == 4 and summary.succeeded + summary.refused == 8
    same_answers(read_results(out), fresh_answers(folder, bundled, tmp_path))


def test_resume_after_an_interrupted_overwrite_of_another_models_output(bundled, other_model, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES)
    out = tmp_path / "r.csv"
    infer_folder(folder, other_model, out, progress=False)
    with pytest.raises(KeyboardInterrupt):
        infer_folder(folder, InterruptedAfter(bundled, 2), out, batch_size=4, overwrite=True, progress=False)
    summary = infer_folder(folder, bundled, out, batch_size=4, resume=True, progress=False)  # as the hint says
    assert summary.skipped_as_done == 4
    assert {row["model_sha256"] for row in read_results(out)} == {bundled.sha256}


def test_an_overwrite_interrupted_before_any_answer_keeps_nothing_either(bundled, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES, 4)
    out = tmp_path / "r.csv"
    infer_folder(folder, bundled, out, progress=False)
    replace_images(folder)
    with pytest.raises(KeyboardInterrupt):
        infer_folder(folder, InterruptedAfter(bundled, 1), out, overwrite=True, progress=False)
    summary = infer_folder(folder, bundled, out, resume=True, progress=False)
    assert summary.skipped_as_done == 0 and summary.succeeded + summary.refused == 4
    same_answers(read_results(out), fresh_answers(folder, bundled, tmp_path))


def test_a_file_changed_since_its_answer_is_answered_again(bundled, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES, 6)
    out = tmp_path / "r.jsonl"
    infer_folder(folder, bundled, out, progress=False)
    changed = folder / "02.jpg"
    shutil.copy(SAMPLES[-1], changed)
    said = []
    summary = infer_folder(folder, bundled, out, resume=True, progress=False, log=said.append)
    assert (summary.skipped_as_done, summary.changed, summary.succeeded + summary.refused) == (5, 1, 1)
    assert any("1 file(s) changed since" in line for line in said), said
    same_answers(read_results(out), fresh_answers(folder, bundled, tmp_path))


def test_a_deleted_file_drops_its_row_instead_of_blocking_the_resume(bundled, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES, 6)
    out = tmp_path / "r.csv"
    infer_folder(folder, bundled, out, progress=False)
    (folder / "03.jpg").unlink()
    said = []
    summary = infer_folder(folder, bundled, out, resume=True, progress=False, log=said.append)
    assert (summary.skipped_as_done, summary.deleted) == (5, 1)
    assert any("no longer exist" in line for line in said), said
    assert "03.jpg" not in {Path(row["path"]).name for row in read_results(out)}


def test_rows_of_another_folder_are_still_refused(bundled, tmp_path):
    out = tmp_path / "r.csv"
    infer_folder(fill(tmp_path / "a", SAMPLES, 3), bundled, out, progress=False)
    with pytest.raises(InputError, match="not in .*another folder"):
        infer_folder(fill(tmp_path / "b", SAMPLES, 3), bundled, out, resume=True, progress=False)
    nested = tmp_path / "c"
    fill(nested / "sub", SAMPLES, 2)
    infer_folder(nested, bundled, tmp_path / "c.csv", recursive=True, progress=False)
    with pytest.raises(InputError, match="add --recursive"):
        infer_folder(nested, bundled, tmp_path / "c.csv", resume=True, progress=False)


def test_resume_messages_name_the_actual_difference(bundled, other_model, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES, 3)
    out = tmp_path / "r.csv"
    infer_folder(folder, bundled, out, progress=False)
    with pytest.raises(InputError) as another_model:
        infer_folder(folder, other_model, out, resume=True, progress=False)
    assert "not from other.onnx" in str(another_model.value) and "--model" in str(another_model.value)
    assert "threshold" not in str(another_model.value)
    with pytest.raises(InputError, match=r"resume with --ood-threshold [0-9.]+, or write"):
        infer_folder(folder, bundled, out, resume=True, progress=False, ood_threshold=99.0)
    with pytest.raises(InputError, match="nothing to continue"):
        infer_folder(folder, bundled, tmp_path / "never.csv", resume=True, progress=False)
    assert not (tmp_path / "never.csv").exists()


def test_an_unreadable_sub_folder_gets_an_error_row(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    fill(folder / "readable", SAMPLES, 2)
    fill(folder / "locked", SAMPLES, 2)
    scandir = os.scandir

    def refusing(path="."):  # as root, chmod cannot make a folder unreadable: refuse as the kernel would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    result = CliRunner().invoke(main, ["infer", str(folder), "--recursive", "--out", str(tmp_path / "r.csv")])
    assert result.exit_code == 3, result.output
    assert "cannot list" in result.stderr and "locked" in result.stderr
    rows = {Path(row["path"]).name: row for row in read_results(tmp_path / "r.csv")}
    assert rows["locked"]["status"] == "error" and "Permission denied" in rows["locked"]["reason"]
    assert sum(row["status"] != "error" for row in rows.values()) == 2
    monkeypatch.setattr(os, "scandir", scandir)  # readable again: --resume answers its files, drops its row
    resumed = CliRunner().invoke(main, ["infer", str(folder), "--recursive", "--out", str(tmp_path / "r.csv"),
                                        "--resume"])
    assert resumed.exit_code == 0, resumed.output
    names = sorted(str(Path(row["path"]).relative_to(folder)) for row in read_results(tmp_path / "r.csv"))
    assert names == ["locked/00.jpg", "locked/01.jpg", "readable/00.jpg", "readable/01.jpg"]


def test_a_journal_torn_by_a_killed_run_resumes(bundled, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES, 6)
    out = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        infer_folder(folder, InterruptedAfter(bundled, 2), out, batch_size=3, progress=False)
    journal = out.with_name(".r.jsonl.partial.jsonl")
    with open(journal, "a", encoding="utf-8") as stream:  # what SIGKILL in the middle of a write leaves
        stream.write('{"path": "' + str(folder / "03.jpg") + '", "status": "o')
    for _ in range(2):  # a resume appends after the torn line's start, not after its end; then one more resume
        summary = infer_folder(folder, bundled, out, resume=True, progress=False)
    assert summary.skipped_as_done == 6
    same_answers(read_results(out), fresh_answers(folder, bundled, tmp_path))


@pytest.mark.parametrize("name", ["line\u2028separator.jpg", "caf\udce9.jpg"], ids=["U+2028", "not-utf8"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_names_that_are_hard_to_write_survive_every_format_and_resume(bundled, tmp_path, name, suffix):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLES[0], os.fsencode(folder) + b"/" + os.fsencode(name))
    shutil.copy(SAMPLES[1], folder / "plain.jpg")
    out = tmp_path / f"r{suffix}"
    result = CliRunner().invoke(main, ["infer", str(folder), "--out", str(out), "--quiet", "--report",
                                       str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert sorted(Path(row["path"]).name for row in rows) == sorted([name, "plain.jpg"])
    assert {row["status"] for row in rows} <= {"ok", "refused"}
    again = infer_folder(folder, bundled, out, resume=True, progress=False)
    assert again.skipped_as_done == 2 and again.changed == 0
    (tmp_path / "r.html").read_bytes().decode("utf-8")  # the page is valid UTF-8 whatever the names


def test_ray_alone_is_not_taken_for_a_folder_named_local(tmp_path, monkeypatch):
    (tmp_path / "local").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["infer", str(REPO / "samples" / "brain_mri" / "test"), "--recursive", "--out",
                                       str(tmp_path / "r.csv"), "--ray", "--ray-actors", "1000"])
    assert result.exit_code == 1 and "can hold" in result.stderr, result.output


def test_a_sub_folder_that_becomes_unreadable_replaces_its_files_rows(bundled, tmp_path, monkeypatch):
    folder = tmp_path / "images"
    fill(folder / "readable", SAMPLES, 2)
    fill(folder / "locked", SAMPLES, 2)
    out = tmp_path / "r.csv"
    infer_folder(folder, bundled, out, recursive=True, progress=False)
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path=".": (_ for _ in ()).throw(PermissionError(
        13, "Permission denied", str(path))) if Path(path).name == "locked" else scandir(path))
    summary = infer_folder(folder, bundled, out, recursive=True, resume=True, progress=False)
    assert summary.skipped_as_done == 2 and summary.failed == 1
    names = sorted(str(Path(row["path"]).relative_to(folder)) for row in read_results(out))
    assert names == ["locked", "readable/00.jpg", "readable/01.jpg"]


def test_rows_of_an_older_version_are_answered_again_and_said_so(bundled, tmp_path):
    folder = fill(tmp_path / "images", SAMPLES, 3)
    out = tmp_path / "r.jsonl"
    infer_folder(folder, bundled, out, progress=False)
    old = [{k: v for k, v in row.items() if k not in (FILE_SIZE, FILE_MTIME)} for row in read_results(out)]
    out.write_text("".join(json.dumps(row) + "\n" for row in old))
    said = []
    summary = infer_folder(folder, bundled, out, resume=True, progress=False, log=said.append)
    assert (summary.unrecorded, summary.changed, summary.succeeded + summary.refused) == (3, 0, 3)
    assert any("older s3f-edge" in line for line in said), said


def test_journal_rows_are_told_from_its_header_by_parsing():
    from s3f_edge.results import journal_has_rows, journal_header

    def holds(tmp, lines):
        tmp.write_text("".join(lines))
        return journal_has_rows(tmp)

    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        journal = Path(scratch) / ".r.csv.partial.jsonl"
        assert not journal_has_rows(journal)
        assert not holds(journal, [journal_header(False, "abc")])
        assert holds(journal, [journal_header(False, "abc"), '{"path": "s3f_edge_journal/x.jpg", "status": "ok"}\n'])
        assert holds(journal, [journal_header(False, "abc"), '{"path": "torn'])
