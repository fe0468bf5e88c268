"""The bundled default model: present, small, self-consistent, used by `infer`, and its card reproducible."""
import csv
import json
from pathlib import Path

import pytest

from s3f_edge.runtime.formats import load_predictor
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR, default_model
from s3f_edge.testing import data_missing, data_root

BRAIN_MRI_MISSING = data_missing("brain_tumor_mri")  # the whole test set, under $S3F_EDGE_DATA
DUPLICATES = Path(__file__).resolve().parents[1] / "docs" / "brain_mri_test_duplicates.txt"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())


def test_bundle_is_complete_small_and_matches_its_card(card):
    from s3f_edge.data.files import file_sha256

    names = {"model.keras", "model.onnx", "card.json", "MODEL_CARD.md"}
    assert {p.name for p in DEFAULT_MODEL_DIR.iterdir()} == names
    assert sum((DEFAULT_MODEL_DIR / n).stat().st_size for n in names) < 20 * 1024 * 1024
    for name, entry in card["files"].items():
        assert file_sha256(DEFAULT_MODEL_DIR / name) == entry["sha256"], f"{name} changed since its card was written"
    assert "Not for clinical use" in (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    keras_model, onnx_model = load_predictor(DEFAULT_MODEL_DIR / "model.keras"), load_predictor(default_model())
    assert keras_model.class_names == onnx_model.class_names == card["class_names"]
    assert keras_model.contract == onnx_model.contract
    assert keras_model.contract.to_dict() == card["preprocessing"]


def test_infer_uses_the_bundled_model_without_model_option(tmp_path, sample_dir):
    from click.testing import CliRunner

    from s3f_edge.cli import main

    out = tmp_path / "results.csv"
    result = CliRunner().invoke(main, ["infer", str(sample_dir / "test"), "--recursive", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    # Every file answered; the bundled model refuses about 2 % of its own test set (docs/calibration.md).
    assert len(rows) == 24 and {row["status"] for row in rows} <= {"ok", "refused"}
    assert sum(row["status"] == "ok" for row in rows) >= 22
    assert {row["model_sha256"] for row in rows} == {load_predictor(default_model()).sha256}
    correct = sum(row["predicted_class"] == Path(row["path"]).parent.name for row in rows)
    assert correct >= 12, f"the bundled model got only {correct}/24 sample images right"
    # the bundled file carries its own prediction sets: every ok row has one (size 0 only without a class)
    assert all(row["set_size"] != "" for row in rows if row["status"] == "ok")
    assert all(len(row["answer_set"].split("|")) == int(row["set_size"]) for row in rows if row["answer_set"])


@pytest.mark.skipif(BRAIN_MRI_MISSING is not None, reason=f"brain MRI test set: {BRAIN_MRI_MISSING}")
@pytest.mark.parametrize("split, exclude", [("official_test", None), ("deduplicated_test", DUPLICATES)])
def test_evaluate_reproduces_the_card(card, tmp_path, split, exclude):
    from s3f_edge.train.evaluate import evaluate_folder

    test_set = data_root() / "brain_tumor_mri" / "test"
    report = evaluate_folder(DEFAULT_MODEL_DIR / "model.keras", test_set, tmp_path, exclude=exclude)
    expected = card["evaluation"]["model.keras"][split]
    assert report["metrics"]["count"] == expected["count"]
    assert abs(report["metrics"]["accuracy"] - expected["accuracy"]) <= 0.005


def test_evaluate_never_writes_into_the_bundled_model_directory(tmp_path, sample_dir, monkeypatch):
    from click.testing import CliRunner

    from s3f_edge.cli import main

    before = sorted(p.name for p in DEFAULT_MODEL_DIR.iterdir())
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["evaluate", str(DEFAULT_MODEL_DIR / "model.onnx"), str(sample_dir / "test")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "default-model" / "evaluate-test" / "metrics.json").is_file()
    assert sorted(p.name for p in DEFAULT_MODEL_DIR.iterdir()) == before
