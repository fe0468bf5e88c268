"""The command line's contract, checked on every command: an error is one line on stderr that names the problem
and says what to do, its exit code is the one the README's table gives, there is no traceback, and no file is
left that looks like a good result. The cases are (a) an unwritable output, (b) a non-model file of each model
suffix, (c) an empty folder, (d) a missing path; completeness tests make sure a new command, path argument or
output option cannot escape them."""
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3f_edge.cli import main
from s3f_edge.cli import support as cli_support
from s3f_edge.cli.support import ExistingPath
from s3f_edge.runtime.formats import MODEL_SUFFIXES
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "brain_mri"
KERAS, ONNX = DEFAULT_MODEL_DIR / "model.keras", DEFAULT_MODEL_DIR / "model.onnx"
# What a message of each kind of case must say: the problem, and what to do next.
ADVICE = {
    "unwritable": re.compile(r"cannot write .*; choose a location you can write to"),
    "fake model": re.compile(r"(is not a Keras model file|is not an ONNX model|ONNX Runtime cannot load).*; give |"
                             r"s3f-edge did not build it; build |must end in .*\(see '"),
    "empty folder": re.compile(r"(no images|no readable images|no files|one sub-folder of images per class)"
                               r".*(; give|pass --recursive)"),
    "missing path": re.compile(r"no such (file|folder|file or folder): .*; check the path"),
    "unknown option": re.compile(r"No such option:? '?--no-such-option.*\(see 's3f-edge [\w-]+ --help'\)"),
    "folder for a file": re.compile(r"is a folder; give a file name"),
    "bad value": re.compile(r"Invalid value for .*(not a finite number|not a number|is not an address|"
                            r"1 <= min <= opt <= max|is not in the range|not a valid (?:float|number|integer)).*"
                            r"\(see 's3f-edge [\w-]+ --help'\)"),
    "not results": re.compile(r"is not an s3f-edge results file \(.*\); give a results file that s3f-edge infer wrote"),
    "cannot": re.compile(r"(needs a \.keras model|can hold \d+ actor\(s\)).*: (give|lower)"),
}
# Output options that cannot be exercised here, and why.
UNTESTABLE_OUTPUTS = {("export", "timing_cache"): "used only with --trt, which needs TensorRT and a GPU"}


def readme_exit_codes() -> dict[str, int]:
    """The README's exit-code table as {meaning's keyword: code}: the single source the CLI is held to."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| Exit code |"):].split("\n\n")[0]
    codes = {}
    for row in table.splitlines()[2:]:
        code, meaning = (cell.strip() for cell in row.strip("|").split("|")[:2])
        codes[re.match(r"\*\*(.+?)\*\*", meaning).group(1)] = int(code)
    return codes


def test_the_readme_table_is_what_the_code_returns():
    codes = readme_exit_codes()
    assert codes == {"success": cli_support.EXIT_OK, "error": cli_support.EXIT_ERROR, "usage": cli_support.EXIT_USAGE,
                     "some files failed": cli_support.EXIT_SOME_FILES_FAILED,
                     "interrupted": cli_support.EXIT_INTERRUPTED}


@dataclass
class Case:
    command: str
    kind: str  # unwritable | fake model | empty folder | missing path | usage
    argv: list[str]
    expect: str  # a keyword of the README's exit-code table
    names: str  # what the message must name (a path's file name, usually)
    param: str | None = None  # the click parameter the case exercises


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Inputs the cases point at: an empty folder, a file to block a folder path, text files with model suffixes."""
    root = tmp_path_factory.mktemp("world")
    (root / "empty").mkdir()
    (root / "blocker").write_text("a file where a folder would have to be created")
    for suffix in MODEL_SUFFIXES:
        (root / f"fake{suffix}").write_text("this is a text file, not a model\n")
    (root / "folder.csv").mkdir()  # folders named like the files a command writes
    for suffix in (".html", ".keras", ".cache", ".json", ".png"):
        (root / f"folder{suffix}").mkdir()
    (root / "five.json").write_text('{"results": 5}')
    (root / "cells.csv").write_text("path,status,reason\na.png,ok\n")
    (root / "nostatus.csv").write_text("path,reason\na.png,\n")
    (root / "broken.jsonl").write_text('{"path": "a.png", "status": "ok"}\n{"path": "b.png", "sta\n'
                                       '{"path": "c.png", "status": "ok"}\n')
    image = sorted((SAMPLES / "test").rglob("*.jpg"))[0]
    (root / "results.csv").write_text(  # what infer writes, for the report command
        "path,status,reason,predicted_class,prob_a,prob_b,ood_score,ood_threshold,model,model_sha256\n"
        f"{image},ok,,a,0.9,0.1,,,model.onnx,0\n")
    return root


def unwritable_cases(world: Path) -> list[Case]:
    cases = []
    # /proc refuses new files even to root; a path under a regular file cannot be a folder for anyone.
    for label, place in (("proc", Path("/proc/s3f-edge-test")), ("under a file", world / "blocker" / "sub")):
        def case(command, param, argv, target, label=label):
            cases.append(Case(command, f"unwritable ({label})", argv, "error", Path(target).name, param))

        case("train", "out_dir", ["train", str(SAMPLES), "--out", str(place / "run-dir")], "run-dir")
        case("train", "cache_dir", ["train", str(SAMPLES), "--out", "{out}/run", "--cache", "disk",
                                    "--cache-dir", str(place / "cache-dir")], "cache-dir")
        case("evaluate", "out_dir", ["evaluate", str(ONNX), str(SAMPLES / "test"), "--out", str(place / "eval-dir")],
             "eval-dir")
        case("precise-bn", "out_path", ["precise-bn", str(KERAS), str(SAMPLES), "--out", str(place / "fixed.keras")],
             "fixed.keras")
        case("export", "out_dir", ["export", str(KERAS), "--out", str(place / "export-dir")], "export-dir")
        case("export", "triton_repo", ["export", str(KERAS), "--out", "{out}/x", "--triton", str(place / "triton-dir")],
             "triton-dir")
        case("infer", "output", ["infer", str(SAMPLES / "test"), "--recursive", "--out", str(place / "results.csv")],
             "results.csv")
        case("infer", "explain_dir", ["infer", str(SAMPLES / "test"), "--recursive", "--model", str(KERAS), "--out",
                                      "{out}/r.csv", "--explain", str(place / "cams-dir")], "cams-dir")
        case("bench", "json_out", ["bench", str(ONNX), "--json", str(place / "bench.json"), "--duration", "0.1"],
             "bench.json")
        case("bench", "plot_out", ["bench", str(ONNX), "--plot", str(place / "bench.png"), "--duration", "0.1"],
             "bench.png")
        case("matrix", "out_dir", ["matrix", str(KERAS), "--out", str(place / "matrix-dir")], "matrix-dir")
        case("calibrate", "out_path", ["calibrate", str(KERAS), str(SAMPLES), "--out", str(place / "cal.keras")],
             "cal.keras")
        case("infer", "report", ["infer", str(SAMPLES / "test"), "--recursive", "--out", "{out}/r.csv", "--report",
                                 str(place / "review.html")], "review.html")
        case("infer", "dicom_sr", ["infer", str(SAMPLES / "test"), "--recursive", "--out", "{out}/r.csv",
                                   "--dicom-sr", str(place / "reports-dir")], "reports-dir")
        case("evaluate", "report_page", ["evaluate", str(ONNX), str(SAMPLES / "test"), "--out", "{out}/e",
                                         "--report", str(place / "evaluation.html")], "evaluation.html")
        case("report", "output", ["report", str(world / "results.csv"), "--out", str(place / "page.html")],
             "page.html")
        case("listen", "folder", ["listen", str(place / "node-dir"), "--allow", "PACS", "--port", "0"], "node-dir")
    return cases


# Where each command takes a model, the suffixes it accepts (others are usage errors), and its argv around it.
MODEL_SLOTS = {
    ("evaluate", "model_path"): (MODEL_SUFFIXES, lambda m: ["evaluate", m, str(SAMPLES / "test"), "--out", "{out}/e"]),
    ("precise-bn", "model_path"): ((".keras",), lambda m: ["precise-bn", m, str(SAMPLES), "--out", "{out}/m.keras"]),
    ("export", "model_path"): ((".keras",), lambda m: ["export", m, "--out", "{out}/x"]),
    ("infer", "model_path"): (MODEL_SUFFIXES, lambda m: ["infer", str(SAMPLES / "test"), "--recursive", "--model", m,
                                                         "--out", "{out}/r.csv"]),
    ("verify", "keras_model"): ((".keras",), lambda m: ["verify", m, str(ONNX)]),
    ("verify", "deployed"): ((".onnx", ".engine", ".plan"), lambda m: ["verify", str(KERAS), m]),
    ("bench", "models"): (MODEL_SUFFIXES, lambda m: ["bench", m, "--duration", "0.1", "--json", "{out}/b.json"]),
    ("matrix", "model_path"): ((".keras",), lambda m: ["matrix", m, "--out", "{out}/m"]),
    ("calibrate", "model_path"): ((".keras",), lambda m: ["calibrate", m, str(SAMPLES), "--out", "{out}/c.keras"]),
    ("listen", "model_path"): (MODEL_SUFFIXES, lambda m: ["listen", "{out}/node", "--allow", "PACS", "--port", "0",
                                                          "--model", m]),
}


def fake_model_cases(world: Path) -> list[Case]:
    cases = []
    for (command, param), (accepted, argv) in MODEL_SLOTS.items():
        for suffix in MODEL_SUFFIXES:
            fake = world / f"fake{suffix}"
            cases.append(Case(command, f"fake model {suffix}", argv(str(fake)),
                              "error" if suffix in accepted else "usage", fake.name, param))
    return cases


def empty_folder_cases(world: Path) -> list[Case]:
    empty = str(world / "empty")
    table = [
        ("train", "data", ["train", empty, "--out", "{out}/run"]),
        ("evaluate", "data", ["evaluate", str(ONNX), empty, "--out", "{out}/e"]),
        ("precise-bn", "images", ["precise-bn", str(KERAS), empty, "--out", "{out}/m.keras"]),
        ("export", "parity_images", ["export", str(KERAS), "--out", "{out}/x", "--images", empty]),
        ("export", "calib", ["export", str(KERAS), "--out", "{out}/x", "--precision", "int8", "--calib", empty]),
        ("export", "data", ["export", str(KERAS), "--out", "{out}/x", "--data", empty]),
        ("infer", "folder", ["infer", empty, "--out", "{out}/r.csv"]),
        ("verify", "images", ["verify", str(KERAS), str(ONNX), "--images", empty]),
        ("bench", "images", ["bench", str(ONNX), "--images", empty, "--json", "{out}/b.json"]),
        ("bench", "e2e_dir", ["bench", str(ONNX), "--end-to-end", empty, "--json", "{out}/b.json"]),
        ("matrix", "data", ["matrix", str(KERAS), empty, "--out", "{out}/m"]),
        ("matrix", "calib", ["matrix", str(KERAS), "--calib", empty, "--out", "{out}/m"]),
        ("fft-check", "images", ["fft-check", empty]),
        ("calibrate", "data", ["calibrate", str(KERAS), empty, "--out", "{out}/c.keras"]),
        ("evaluate", "ood_folders", ["evaluate", str(ONNX), str(SAMPLES / "test"), "--ood", empty, "--out", "{out}/e"]),
        ("report", "explain_dir", ["report", str(world / "results.csv"), "--explain", empty, "--out", "{out}/r.html"]),
        ("report", "dicom_sr", ["report", str(world / "results.csv"), "--dicom-sr", empty, "--out", "{out}/r.html"]),
    ]
    return [Case(command, "empty folder", argv, "error", "empty", param) for command, param, argv in table]


def missing_path_cases(world: Path) -> list[Case]:
    gone = str(world / "gone")
    table = [
        ("train", "data", ["train", gone, "--out", "{out}/run"]),
        ("train", "resume_dir", ["train", str(SAMPLES), "--resume", gone]),
        ("train", "class_codes", ["train", str(SAMPLES), "--out", "{out}/run", "--class-codes", gone + ".json"]),
        ("export", "class_codes", ["export", str(KERAS), "--out", "{out}/x", "--class-codes", gone + ".json"]),
        ("evaluate", "model_path", ["evaluate", gone + ".onnx", str(SAMPLES / "test"), "--out", "{out}/e"]),
        ("evaluate", "data", ["evaluate", str(ONNX), gone, "--out", "{out}/e"]),
        ("evaluate", "exclude", ["evaluate", str(ONNX), str(SAMPLES / "test"), "--exclude", gone, "--out", "{out}/e"]),
        ("precise-bn", "model_path", ["precise-bn", gone + ".keras", str(SAMPLES), "--out", "{out}/m.keras"]),
        ("precise-bn", "images", ["precise-bn", str(KERAS), gone, "--out", "{out}/m.keras"]),
        ("export", "model_path", ["export", gone + ".keras", "--out", "{out}/x"]),
        ("export", "calib", ["export", str(KERAS), "--out", "{out}/x", "--precision", "int8", "--calib", gone]),
        ("export", "data", ["export", str(KERAS), "--out", "{out}/x", "--data", gone]),
        ("export", "parity_images", ["export", str(KERAS), "--out", "{out}/x", "--images", gone]),
        ("infer", "folder", ["infer", gone, "--out", "{out}/r.csv"]),
        ("infer", "model_path", ["infer", str(SAMPLES / "test"), "--model", gone + ".onnx", "--out", "{out}/r.csv"]),
        ("verify", "keras_model", ["verify", gone + ".keras", str(ONNX)]),
        ("verify", "deployed", ["verify", str(KERAS), gone + ".onnx"]),
        ("verify", "images", ["verify", str(KERAS), str(ONNX), "--images", gone]),
        ("bench", "models", ["bench", gone + ".onnx", "--json", "{out}/b.json"]),
        ("bench", "images", ["bench", str(ONNX), "--images", gone, "--json", "{out}/b.json"]),
        ("bench", "e2e_dir", ["bench", str(ONNX), "--end-to-end", gone, "--json", "{out}/b.json"]),
        ("matrix", "model_path", ["matrix", gone + ".keras", "--out", "{out}/m"]),
        ("matrix", "data", ["matrix", str(KERAS), gone, "--out", "{out}/m"]),
        ("matrix", "calib", ["matrix", str(KERAS), "--calib", gone, "--out", "{out}/m"]),
        ("fft-check", "images", ["fft-check", gone]),
        ("calibrate", "model_path", ["calibrate", gone + ".keras", str(SAMPLES), "--out", "{out}/c.keras"]),
        ("calibrate", "data", ["calibrate", str(KERAS), gone, "--out", "{out}/c.keras"]),
        ("evaluate", "ood_folders", ["evaluate", str(ONNX), str(SAMPLES / "test"), "--ood", gone, "--out", "{out}/e"]),
        ("report", "results", ["report", gone + ".csv", "--out", "{out}/r.html"]),
        ("report", "explain_dir", ["report", str(world / "results.csv"), "--explain", gone, "--out", "{out}/r.html"]),
        ("report", "dicom_sr", ["report", str(world / "results.csv"), "--dicom-sr", gone, "--out", "{out}/r.html"]),
        ("listen", "model_path", ["listen", "{out}/node", "--allow", "PACS", "--model", gone + ".onnx"]),
        ("listen", "tls_cert", ["listen", "{out}/node", "--allow", "PACS", "--tls-cert", gone + ".pem"]),
        ("listen", "tls_key", ["listen", "{out}/node", "--allow", "PACS", "--tls-key", gone + ".pem"]),
        ("listen", "tls_ca", ["listen", "{out}/node", "--allow", "PACS", "--tls-ca", gone + ".pem"]),
    ]
    return [Case(command, "missing path", argv, "error", "gone", param) for command, param, argv in table]


def folder_for_file_cases(world: Path) -> list[Case]:
    """A folder where the command would write a file: found on disk, so an error (1), not a usage error."""
    table = [
        ("infer", "output", ["infer", str(SAMPLES / "test"), "--recursive", "--out", "{dir}.csv"]),
        ("infer", "report", ["infer", str(SAMPLES / "test"), "--recursive", "--out", "{out}/r.csv", "--report",
                             "{dir}.html"]),
        ("evaluate", "report_page", ["evaluate", str(ONNX), str(SAMPLES / "test"), "--out", "{out}/e", "--report",
                                     "{dir}.html"]),
        ("precise-bn", "out_path", ["precise-bn", str(KERAS), str(SAMPLES), "--out", "{dir}.keras"]),
        ("calibrate", "out_path", ["calibrate", str(KERAS), str(SAMPLES), "--out", "{dir}.keras"]),
        ("export", "timing_cache", ["export", str(KERAS), "--out", "{out}/x", "--timing-cache", "{dir}.cache"]),
        ("bench", "json_out", ["bench", str(ONNX), "--duration", "0.1", "--json", "{dir}.json"]),
        ("bench", "plot_out", ["bench", str(ONNX), "--duration", "0.1", "--plot", "{dir}.png"]),
        ("report", "output", ["report", str(world / "results.csv"), "--out", "{dir}.html"]),
    ]
    return [Case(command, "folder for a file", [a.replace("{dir}", str(world / "folder")) for a in argv], "error",
                 "folder", param) for command, param, argv in table]


def bad_value_cases(world: Path) -> list[Case]:
    """Values wrong from the command line alone (usage, 2), and what this machine or model cannot do (error, 1)."""
    infer = ["infer", str(SAMPLES / "test"), "--recursive", "--out", "{out}/r.csv"]
    cases = [Case("infer", "bad value", [*infer, "--ood-threshold", value], "usage", "--ood-threshold",
                  "ood_threshold") for value in ("nan", "inf", "-inf", "1e400", "abc")]
    cases += [Case("infer", "bad value", [*infer, "--ray", value], "usage", "--ray", "ray_address")
              for value in ("bogus", "127.0.0.1:99999", "host:0")]
    cases += [Case("infer", "bad value", [*infer, "--ray", "--ray-cpus", "nan"], "usage", "--ray-cpus", "ray_cpus"),
              Case("infer", "bad value", [*infer, "--ray", "--ray-gpus", "inf"], "usage", "--ray-gpus", "ray_gpus"),
              Case("infer", "bad value", [*infer, "--ray", "--ray-actors", "0"], "usage", "--ray-actors",
                   "ray_actors"),
              Case("export", "bad value", ["export", str(KERAS), "--out", "{out}/x", "--trt-batch", "5,1,2"], "usage",
                   "--trt-batch", "trt_batch"),
              Case("calibrate", "bad value", ["calibrate", str(KERAS), str(SAMPLES), "--out", "{out}/c.keras",
                                              "--keep", "nan"], "usage", "--keep", "keep"),
              Case("train", "bad value", ["train", str(SAMPLES), "--out", "{out}/run", "--lr", "nan"], "usage",
                   "--lr", "learning_rate"),
              Case("bench", "bad value", ["bench", str(ONNX), "--duration", "inf"], "usage", "--duration",
                   "duration"),
              Case("infer", "cannot", [*infer, "--ray", "--ray-actors", "100"], "error", "100", "ray_actors"),
              Case("infer", "cannot", [*infer, "--explain", "{out}/cams"], "error", "--explain", "explain_dir")]
    for name in ("five.json", "cells.csv", "nostatus.csv", "broken.jsonl"):  # written by the world fixture
        cases.append(Case("report", "not results", ["report", str(world / name), "--out", "{out}/r.html"], "error",
                          name, "results"))
    return cases


def usage_cases() -> list[Case]:
    """Every command refuses an unknown option with one line and the usage code."""
    return [Case(name, "unknown option", [name, "--no-such-option"], "usage", "--no-such-option")
            for name in main.commands]


def all_cases(world: Path) -> list[Case]:
    return (unwritable_cases(world) + fake_model_cases(world) + empty_folder_cases(world) + missing_path_cases(world)
            + folder_for_file_cases(world) + bad_value_cases(world) + usage_cases())


def case_id(case: Case) -> str:
    return f"{case.command}-{case.kind}-{case.param or ''}"


# Collected at import: the same cases, with paths under a placeholder folder that the test replaces.
_PLACEHOLDER = Path("/placeholder-world")
CASES = all_cases(_PLACEHOLDER)


def entries_under(folder: Path) -> list[Path]:
    """Every file and folder under ``folder`` (an empty run directory left behind counts too)."""
    return sorted(folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_every_command_fails_with_one_line_and_the_readme_code(case, world, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = [a.replace(str(_PLACEHOLDER), str(world)).replace("{out}", str(out)) for a in case.argv]
    before = entries_under(world)
    result = CliRunner().invoke(main, argv, prog_name="s3f-edge")
    stderr = [line for line in result.stderr.splitlines() if line.strip()]

    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"a traceback instead of a message: {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output
    assert result.exit_code == readme_exit_codes()[case.expect], result.output
    assert len(stderr) == 1 and stderr[0].startswith("Error: "), f"not one error line on stderr:\n{result.stderr}"
    assert case.names in stderr[0], f"the message does not name {case.names!r}: {stderr[0]}"
    advice = ADVICE[case.kind.split(" (")[0].split(" .")[0]]
    assert advice.search(stderr[0]), f"the message does not say the problem and what to do: {stderr[0]}"
    assert not out.exists() and entries_under(cwd) == [], "files or folders left behind"
    assert entries_under(world) == before


def output_params() -> set[tuple[str, str]]:
    """(command, parameter) of every path a command writes: click.Path options that need not exist."""
    import click

    return {(name, param.name) for name, command in main.commands.items() for param in command.params
            if isinstance(param.type, click.Path) and not isinstance(param.type, ExistingPath)}


def file_output_params() -> set[tuple[str, str]]:
    """(command, parameter) of every file (not folder) a command writes."""
    return {(name, param.name) for name, command in main.commands.items() for param in command.params
            if isinstance(param.type, cli_support.OutputPath) and not param.type.dir_okay}


def number_params() -> set[tuple[str, str]]:
    """(command, parameter) of the number options on the paths a new user tried: each has a bad-value case."""
    wanted = {("infer", "ood_threshold"), ("infer", "ray_cpus"), ("infer", "ray_gpus"), ("calibrate", "keep")}
    found = {(name, param.name) for name, command in main.commands.items() for param in command.params
             if isinstance(param.type, cli_support.FiniteFloat)}
    assert wanted <= found, "these options should refuse nan and inf"
    return wanted


def test_the_harness_covers_every_command_and_every_path():
    """A new command, path argument, output option or model suffix fails here until it has its cases."""
    covered = {(c.command, c.param, c.kind.split(" (")[0]) for c in CASES}
    assert {c.command for c in CASES} == set(main.commands)
    for command, param in output_params():
        if (command, param) not in UNTESTABLE_OUTPUTS:
            assert (command, param, "unwritable") in covered, f"{command} {param}: no unwritable-output case"
    for command, param in file_output_params():
        assert (command, param, "folder for a file") in covered, f"{command} {param}: no folder-for-a-file case"
    for command, param in number_params():
        assert (command, param, "bad value") in covered, f"{command} {param}: no bad-number case"
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param.type, ExistingPath):
                assert (name, param.name, "missing path") in covered, f"{name} {param.name}: no missing-path case"
                if param.type.file_okay and not param.type.dir_okay:
                    continue
                if param.name in ("resume_dir",):  # a run directory, not a folder of inputs
                    continue
                assert (name, param.name, "empty folder") in covered, f"{name} {param.name}: no empty-folder case"
    models = {(c.command, c.param) for c in CASES if c.kind.startswith("fake model")}
    named_models = {(name, p.name) for name, command in main.commands.items() for p in command.params
                    if p.name in ("model_path", "keras_model", "deployed", "models")}
    assert models == named_models == set(MODEL_SLOTS)
