"""Predictor and `s3f-edge infer`: every file answered, same answers on every backend, crash-safe."""
import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from s3f_edge.cli import main
from s3f_edge.errors import InputError, OutputExistsError
from s3f_edge.export.onnx_export import ExportOptions, export_model
from s3f_edge.runtime import ModelContractError, infer_folder, load_predictor
from s3f_edge.testing import saved_model

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    keras_path = saved_model(folder / "m.keras", "brisc2025", (48, 48, 1), class_names=CLASSES)
    export_model(keras_path, ExportOptions(out_dir=folder / "export"))
    return keras_path, folder / "export" / "model.onnx"


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_keras_and_onnx_give_the_same_classes(models, sample_dir, tmp_path):
    keras_path, onnx_path = models
    results = {}
    for path in models:
        summary = infer_folder(sample_dir / "test", load_predictor(path), tmp_path / f"{path.suffix[1:]}.csv",
                               batch_size=5, recursive=True, progress=False)
        assert summary.succeeded == 24 and summary.failed == 0
        results[path.suffix] = rows_of(tmp_path / f"{path.suffix[1:]}.csv")
    keras_rows, onnx_rows = results[".keras"], results[".onnx"]
    assert [r["path"] for r in keras_rows] == sorted(r["path"] for r in keras_rows)
    assert [r["predicted_class"] for r in keras_rows] == [r["predicted_class"] for r in onnx_rows]
    assert len({r["predicted_class"] for r in keras_rows}) > 1, "the test model should not predict one class only"
    for k, o in zip(keras_rows, onnx_rows):
        for name in CLASSES:
            assert abs(float(k[f"prob_{name}"]) - float(o[f"prob_{name}"])) < 1e-4


def test_predictor_reports_backend_and_refuses_bad_batches(models):
    keras_path, onnx_path = models
    predictor = load_predictor(onnx_path)
    assert predictor.backend == "onnx" and predictor.provider == predictor.session.get_providers()[0]
    assert load_predictor(onnx_path, backend="onnx-cpu").provider == "CPUExecutionProvider"
    assert predictor.class_names == CLASSES and predictor.contract.height == 48
    good = np.random.default_rng(0).random((2, 48, 48, 1), dtype=np.float32)
    probabilities = predictor.predict(good)
    assert probabilities.shape == (2, 4) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    with pytest.raises(InputError, match="add a batch axis"):
        predictor.predict(good[0])
    with pytest.raises(InputError, match="48x48"):
        predictor.predict(np.zeros((1, 32, 48, 1), np.float32))
    with pytest.raises(InputError, match="1 channel"):
        predictor.predict(np.zeros((1, 48, 48, 3), np.float32))
    with pytest.raises(InputError, match="float pixels"):
        predictor.predict(np.zeros((1, 48, 48, 1), np.uint8))
    with pytest.raises(InputError, match="unknown model type"):
        load_predictor(Path(__file__))
    not_onnx = Path(keras_path).with_name("not-a-model.onnx")
    not_onnx.write_bytes(b"this is not a protobuf")
    with pytest.raises(InputError, match="ONNX Runtime cannot load"):
        load_predictor(not_onnx)


def test_model_without_metadata_is_refused_unless_supplied(tmp_path, models):
    import onnx

    _, onnx_path = models
    bare = onnx.load(onnx_path)
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    with pytest.raises(ModelContractError, match="no s3f-edge metadata"):
        load_predictor(tmp_path / "bare.onnx")
    contract = {"height": 48, "width": 48, "channels": 1}
    predictor = load_predictor(tmp_path / "bare.onnx",
                               metadata={"class_names": list("abcd"), "preprocessing": contract})
    assert predictor.class_names == list("abcd")
    future = {**json.loads({p.key: p.value for p in onnx.load(onnx_path).metadata_props}["s3f_edge"])}
    future["preprocessing"]["version"] = 99
    with pytest.raises(ModelContractError, match="Upgrade"):
        load_predictor(tmp_path / "bare.onnx", metadata=future)


def make_bad_folder(folder: Path, sample_dir: Path) -> dict[str, str]:
    """Every kind of bad or awkward input a clinic's folder holds; returns name -> expected status."""
    folder.mkdir()
    good = next((sample_dir / "test" / "glioma").glob("*.jpg"))
    gray = cv2.imread(str(good), cv2.IMREAD_GRAYSCALE)
    expected = {}

    def put(name, data, status):
        (folder / name).write_bytes(data)
        expected[name] = status

    put("good.jpg", good.read_bytes(), "ok")
    put("über scan 1.jpg", good.read_bytes(), "ok")  # unicode and spaces
    put("empty.png", b"", "error")
    put("text.jpg", b"patient notes, not an image", "error")
    put("truncated.jpg", good.read_bytes()[:300], "error")
    put("notes.txt", b"hello", "error")  # unsupported format
    put("alpha.png", cv2.imencode(".png", np.dstack([gray, gray, gray, gray]))[1].tobytes(), "ok")
    put("sixteen.png", cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes(), "ok")
    put("sixteen.tif", cv2.imencode(".tif", gray.astype(np.uint16) * 257)[1].tobytes(), "ok")
    from PIL import Image

    Image.fromarray(gray).convert("P").save(folder / "palette.png")
    expected["palette.png"] = "ok"
    huge = bytearray(cv2.imencode(".png", gray)[1].tobytes())
    huge[16:24] = (60_000).to_bytes(4, "big") + (60_000).to_bytes(4, "big")
    put("huge.png", bytes(huge), "error")
    os.symlink(folder / "does-not-exist.jpg", folder / "broken-link.jpg")
    expected["broken-link.jpg"] = "error"
    locked = folder / "locked.jpg"
    locked.write_bytes(good.read_bytes())
    locked.chmod(0)
    # root reads any file, so an unreadable file is only an error when not running as root
    expected["locked.jpg"] = "ok" if os.geteuid() == 0 else "error"
    return expected


def test_bad_input_never_crashes_and_every_file_gets_a_row(models, sample_dir, tmp_path):
    expected = make_bad_folder(tmp_path / "in", sample_dir)
    runner = CliRunner()
    result = runner.invoke(main, ["infer", str(tmp_path / "in"), "--model", str(models[1]), "--out",
                                  str(tmp_path / "out.jsonl"), "--quiet", "--batch-size", "3"])
    assert result.exit_code == 3, result.output  # some files failed
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == set(expected)
    for name, status in expected.items():
        assert by_name[name]["status"] == status, (name, by_name[name]["reason"])
        if status == "error":
            assert by_name[name]["reason"] and by_name[name]["predicted_class"] == ""
        else:
            assert by_name[name]["predicted_class"] in CLASSES
    assert "exceeds the limit" in by_name["huge.png"]["reason"]
    assert "unsupported format" in by_name["notes.txt"]["reason"]
    assert "empty" in by_name["empty.png"]["reason"]


def test_exit_codes(models, sample_dir, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["infer", str(sample_dir / "test" / "glioma"), "--model", str(models[1]),
                              "--out", str(tmp_path / "r.json"), "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert len(json.loads((tmp_path / "r.json").read_text())["results"]) == 6
    again = runner.invoke(main, ["infer", str(sample_dir / "test" / "glioma"), "--model", str(models[1]),
                                 "--out", str(tmp_path / "r.json"), "--quiet"])
    assert again.exit_code == 1 and "--resume" in again.output  # never overwrite results silently
    usage = runner.invoke(main, ["infer", str(sample_dir), "--batch-size", "0", "--model", str(models[1])])
    assert usage.exit_code == 2


KILLER = textwrap.dedent('''
    import os, signal, sys
    from s3f_edge.runtime import infer_folder, load_predictor, Predictor
    predictor = load_predictor(sys.argv[1])
    calls = {"n": 0}
    original = predictor.predict_scored
    def dying_predict(batch):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGKILL)  # as a power cut would
        return original(batch)
    predictor.predict_scored = dying_predict
    infer_folder(sys.argv[2], predictor, sys.argv[3], batch_size=4, recursive=True, progress=False)
''')


def test_killed_run_resumes_to_a_complete_duplicate_free_output(models, sample_dir, tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    output = tmp_path / "results.csv"
    process = subprocess.run([sys.executable, str(script), str(models[1]), str(sample_dir), str(output)],
                             capture_output=True)
    assert process.returncode != 0
    assert not output.exists(), "a killed run must not leave a half-written output"
    journal = output.with_name(f".{output.name}.partial.jsonl")
    assert 0 < len(journal.read_text().splitlines()) < 72
    summary = infer_folder(sample_dir, load_predictor(models[1]), output, batch_size=4, recursive=True,
                           resume=True, progress=False)
    # three batches of 4 images ran before the kill, plus the sample folder's README.md and
    # manifest.csv, which sort first and get error rows
    assert summary.skipped_as_done == 14 and summary.succeeded == 72 - 12
    rows = rows_of(output)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 74
    assert paths == sorted(paths) and not journal.exists()
    assert sum(r["status"] == "ok" for r in rows) == 72


def test_resume_refuses_rows_from_another_model(models, sample_dir, tmp_path):
    keras_path, onnx_path = models
    output = tmp_path / "results.csv"
    first = load_predictor(onnx_path)
    infer_folder(sample_dir / "test" / "glioma", first, output, progress=False)
    other = load_predictor(keras_path)  # same classes and contract, another file: another model as far as rows go
    with pytest.raises(InputError, match="holds rows from model.onnx") as refused:
        infer_folder(sample_dir / "test", other, output, recursive=True, resume=True, progress=False)
    assert "m.keras" in str(refused.value)
    assert len(rows_of(output)) == 6  # untouched
    summary = infer_folder(sample_dir / "test", first, output, recursive=True, resume=True, progress=False)
    assert summary.skipped_as_done == 6 and summary.succeeded == 18


def test_gradcam_overlays_for_chosen_classes(models, sample_dir, tmp_path):
    keras_path, onnx_path = models
    predictor = load_predictor(keras_path)
    infer_folder(sample_dir / "test", predictor, tmp_path / "r.csv", recursive=True, progress=False,
                 explain_dir=tmp_path / "cams")
    cams = sorted((tmp_path / "cams").glob("*.gradcam.png"))
    assert len(cams) == 24
    image = cv2.imread(str(cams[0]))
    assert image.shape == (48, 48, 3) and image.std() > 0
    rows = rows_of(tmp_path / "r.csv")
    chosen = rows[0]["predicted_class"]
    infer_folder(sample_dir / "test", predictor, tmp_path / "r2.csv", recursive=True, progress=False,
                 explain_dir=tmp_path / "some", explain_classes={chosen})
    assert len(list((tmp_path / "some").glob("*.png"))) == sum(r["predicted_class"] == chosen for r in rows)
    with pytest.raises(InputError, match=".keras model"):
        infer_folder(sample_dir / "test", load_predictor(onnx_path), tmp_path / "r3.csv", explain_dir=tmp_path / "x")


def test_files_of_the_same_name_get_their_own_overlays_on_the_page(models, sample_dir, tmp_path):
    """a/x.jpg, a/x.png and b/x.jpg are three images: three overlays, and the review page shows each row its own."""
    from s3f_edge.report.results_page import overlay_path
    from s3f_edge.report.thumbnails import file_thumbnail

    images = sorted((sample_dir / "test").rglob("*.jpg"))
    folder = tmp_path / "coll"
    for relative, source in (("a/x.jpg", images[0]), ("a/x.png", images[7]), ("b/x.jpg", images[15])):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / relative), cv2.imread(str(source)))
    result = CliRunner().invoke(main, ["infer", str(folder), "--recursive", "--model", str(models[0]), "--out",
                                       str(tmp_path / "r.csv"), "--explain", str(tmp_path / "ex"), "--report",
                                       str(tmp_path / "r.html"), "--quiet"])
    assert result.exit_code == 0, result.output
    overlays = sorted((tmp_path / "ex").glob("*.gradcam.png"))
    assert len(overlays) == 3 and len({cv2.imread(str(p)).tobytes() for p in overlays}) == 3
    rows = rows_of(tmp_path / "r.csv")
    shown = [file_thumbnail(overlay_path(tmp_path / "ex", row["path"], row["predicted_class"])) for row in rows]
    assert all(shown) and len(set(shown)) == 3
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert all(thumb in page for thumb in shown)


def test_a_resume_with_nothing_left_still_writes_its_page_with_overlays(models, sample_dir, tmp_path):
    folder = sample_dir / "test" / "glioma"
    base = ["infer", str(folder), "--model", str(models[0]), "--out", str(tmp_path / "r.csv"), "--quiet"]
    assert CliRunner().invoke(main, base).exit_code == 0
    again = CliRunner().invoke(main, [*base, "--resume", "--explain", str(tmp_path / "cams"), "--report",
                                      str(tmp_path / "r.html")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "r.html").is_file() and "6 already done" in again.output


def test_ctrl_c_advises_resume_only_once_there_is_a_journal(tmp_path):
    from s3f_edge.cli.infer import _interrupt_hint

    output = tmp_path / "r.csv"
    assert _interrupt_hint(output, overwrite=False) is None  # still loading the model: nothing to resume
    (tmp_path / ".r.csv.partial.jsonl").write_text("")
    assert "--resume to continue" in _interrupt_hint(output, overwrite=False)
    assert "instead of --overwrite" in _interrupt_hint(output, overwrite=True)


def test_verify_command(models, sample_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(models[0]), str(models[1]), "--images", str(sample_dir / "test")])
    assert result.exit_code == 0, result.output
    assert "onnx" in result.output and "100.0%" in result.output
    # a model from another source is refused
    other = saved_model(tmp_path / "other.keras", "brisc2025", (32, 32, 1), class_names=CLASSES)
    export_model(other, ExportOptions(out_dir=tmp_path / "other"))
    mismatch = runner.invoke(main, ["verify", str(models[0]), str(tmp_path / "other" / "model.onnx")])
    assert mismatch.exit_code == 1 and "not exported from" in mismatch.output


def test_infer_uses_the_bundled_model_when_no_model_is_given(models, sample_dir, tmp_path, monkeypatch):
    import s3f_edge.runtime.predictor as predictor_module

    monkeypatch.setattr(predictor_module, "DEFAULT_MODEL_DIR", tmp_path / "none")
    missing = CliRunner().invoke(main, ["infer", str(sample_dir / "test" / "glioma"), "--out", str(tmp_path / "a.csv")])
    assert missing.exit_code == 1 and "--model" in missing.output
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    shutil.copy(models[1], bundled / "model.onnx")
    monkeypatch.setattr(predictor_module, "DEFAULT_MODEL_DIR", bundled)
    result = CliRunner().invoke(main, ["infer", str(sample_dir / "test" / "glioma"), "--out", str(tmp_path / "b.csv"),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert {r["model"] for r in rows_of(tmp_path / "b.csv")} == {"model.onnx"}


def test_resume_refuses_the_rows_of_another_folder_and_respells_the_same_one(models, sample_dir, tmp_path, monkeypatch):
    predictor = load_predictor(models[1])
    output = tmp_path / "results.csv"
    infer_folder(sample_dir / "test" / "glioma", predictor, output, progress=False)
    with pytest.raises(InputError, match="not in .*meningioma") as refused:  # another folder's rows never merge
        infer_folder(sample_dir / "test" / "meningioma", predictor, output, resume=True, progress=False)
    assert "another folder" in str(refused.value)
    assert len(rows_of(output)) == 6  # untouched
    # The same folder spelled another way (relative, from its parent) is the same files: nothing is redone.
    monkeypatch.chdir(sample_dir / "test")
    summary = infer_folder(Path("glioma"), predictor, output, resume=True, progress=False)
    assert summary.skipped_as_done == 6 and summary.succeeded == 0
    assert [r["path"] for r in rows_of(output)] == sorted(str(Path("glioma") / p.name)
                                                          for p in (sample_dir / "test" / "glioma").iterdir())


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_results_are_readable_by_the_group_and_others_as_the_umask_says(models, sample_dir, tmp_path, suffix):
    previous = os.umask(0o022)
    try:
        infer_folder(sample_dir / "test" / "glioma", load_predictor(models[1]), tmp_path / f"r{suffix}", progress=False)
    finally:
        os.umask(previous)
    assert (tmp_path / f"r{suffix}").stat().st_mode & 0o777 == 0o644


def test_nothing_to_classify_is_an_error_and_writes_nothing(models, sample_dir, tmp_path):
    predictor = load_predictor(models[1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files to classify"):
        infer_folder(tmp_path / "empty", predictor, tmp_path / "a.csv", progress=False)
    with pytest.raises(InputError, match="pass --recursive"):  # class sub-folders only
        infer_folder(sample_dir / "test", predictor, tmp_path / "b.csv", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_an_existing_output_is_replaced_only_with_overwrite(models, sample_dir, tmp_path):
    predictor = load_predictor(models[1])
    output = tmp_path / "r.csv"
    infer_folder(sample_dir / "test" / "glioma", predictor, output, progress=False)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        infer_folder(sample_dir / "test" / "pituitary", predictor, output, progress=False)
    infer_folder(sample_dir / "test" / "pituitary", predictor, output, progress=False, overwrite=True)
    assert {Path(r["path"]).parent.name for r in rows_of(output)} == {"pituitary"}


FORMULA_NAMES = ["=cmd|' -C calc'!A0.jpg", "+1+1.jpg", "-2+3.jpg", "@SUM(A1).jpg", "\tx.jpg", "'quoted.jpg",
                 "plain.jpg"]


def test_csv_cells_cannot_run_as_spreadsheet_formulas(models, sample_dir, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    image = next((sample_dir / "test" / "glioma").glob("*.jpg"))
    for name in FORMULA_NAMES:
        shutil.copy(image, folder / name)
    monkeypatch.chdir(folder)  # `cd DATA && s3f-edge infer .`: the path cells are the bare file names
    predictor = load_predictor(models[1])
    infer_folder(Path("."), predictor, tmp_path / "r.csv", progress=False)
    infer_folder(Path("."), predictor, tmp_path / "r.jsonl", progress=False)
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as handle:
        cells = [row[0] for row in csv.reader(handle)][1:]
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells), cells
    assert "'=cmd|' -C calc'!A0.jpg" in cells and "plain.jpg" in cells and "''quoted.jpg" in cells
    jsonl = [json.loads(line)["path"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted(jsonl) == sorted(FORMULA_NAMES)  # JSON keeps every value as it is
    # Read back, the CSV gives the names exactly: resuming redoes nothing and duplicates nothing.
    summary = infer_folder(Path("."), predictor, tmp_path / "r.csv", resume=True, progress=False)
    assert summary.skipped_as_done == len(FORMULA_NAMES) and summary.succeeded == 0
    from s3f_edge.results import read_results as read_rows

    assert sorted(r["path"] for r in read_rows(tmp_path / "r.csv")) == sorted(FORMULA_NAMES)


def test_resuming_onto_a_file_that_is_not_a_results_file_is_one_clear_error(models, sample_dir, tmp_path):
    (tmp_path / "other.json").write_text('{"something": "else"}')
    (tmp_path / "other.csv").write_text("name,value\nx,1\n")
    predictor = load_predictor(models[1])
    for name in ("other.json", "other.csv"):
        with pytest.raises(InputError, match=f"{name} is not an s3f-edge results file"):
            infer_folder(sample_dir / "test" / "glioma", predictor, tmp_path / name, resume=True, progress=False)


def test_onnx_threads_follow_the_share_infer_ray_grants_not_omp_num_threads(monkeypatch):
    """A Ray actor gets its share of the CPUs; a shell's OMP_NUM_THREADS must not slow one-machine runs."""
    from s3f_edge.runtime.onnx_backend import INTRA_OP_THREADS_VARIABLE, session_options

    monkeypatch.delenv(INTRA_OP_THREADS_VARIABLE, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert session_options().intra_op_num_threads == 0  # ONNX Runtime's default: one thread per core
    monkeypatch.setenv(INTRA_OP_THREADS_VARIABLE, "3")
    assert session_options().intra_op_num_threads == 3
