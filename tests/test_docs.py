"""The documentation stays true: every relative link resolves, every command shown exists with the options it
uses, every generated table equals the file it comes from, the README stays short, and no page speaks of how
the project was developed."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from s3f_edge.cli import main

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "DEVELOPERS.md", *sorted((REPO / "docs").glob("*.md")),
         REPO / "s3f_edge" / "assets" / "default_model" / "MODEL_CARD.md"]
USER_PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)
INLINE = re.compile(r"`(s3f-edge [^`]+)`")


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://|mailto:|#", target):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page_id(page)} links to missing files: {broken}"


def shown_commands(text: str) -> list[list[str]]:
    """The command lines a page shows: in shell code blocks (continued lines joined, comments and environment
    assignments dropped) and inline, as `s3f-edge ...`."""
    lines = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    lines += INLINE.findall(text)
    commands = []
    for line in lines:
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        while words and re.match(r"^[A-Z_]+=", words[0]):  # TF_CONFIG='...' s3f-edge ...
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def option_names(command) -> set[str]:
    names = {"--help", "-h", "--verbose"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_command_shown_exists_with_the_options_it_uses(page):
    problems = []
    for words in shown_commands(page.read_text()):
        program, args = words[0], words[1:]
        if program == "s3f-edge":
            args = [a for a in args if a != "--verbose"]
            if not args or args[0] in ("--help", "-h", "--version"):
                continue
            command = main.commands.get(args[0])
            if command is None:
                problems.append(f"no command {args[0]!r}: {' '.join(words)}")
                continue
            unknown = [a.split("=")[0] for a in args[1:] if a.startswith("-") and a.split("=")[0] not in
                       option_names(command) and not re.match(r"^-\d", a)]
            if unknown:
                problems.append(f"{args[0]} has no option {unknown}: {' '.join(words)}")
        elif program == "make":
            problems += [f"no make target {t!r}" for t in args if not t.startswith("-") and t not in make_targets()]
        elif program in ("python", "bash") or program.endswith("/python"):
            script = next((a for a in args if a.endswith((".py", ".sh"))), None)
            if script and not (REPO / script).is_file():
                problems.append(f"no script {script}: {' '.join(words)}")
    assert not problems, f"{page_id(page)}:\n" + "\n".join(problems)


def test_the_harness_finds_commands_and_would_catch_a_wrong_one():
    found = shown_commands("```bash\ns3f-edge infer FOLDER/ --model M.onnx \\\n  --out r.csv   # a comment\n```\n"
                           "and `s3f-edge train DATA/ --epochs 3`.")
    assert found == [["s3f-edge", "infer", "FOLDER/", "--model", "M.onnx", "--out", "r.csv"],
                     ["s3f-edge", "train", "DATA/", "--epochs", "3"]]
    assert "--no-such-option" not in option_names(main.commands["infer"])
    assert {"--batch-size", "--batch"} <= option_names(main.commands["infer"])


def test_the_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", USER_PAGES, ids=page_id)
def test_user_documentation_does_not_speak_of_development(page):
    text = page.read_text()
    found = re.findall(r"(?i)\bissues? \d+|done-when|\bspec §|\.\./shared/", text)
    assert not found, f"{page_id(page)} mentions {sorted(set(found))}"


def test_generated_tables_equal_the_files_they_come_from():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "update_docs.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def readme_python_snippet() -> str:
    """The code block of the README's "## Python" section."""
    section = (REPO / "README.md").read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("calibrated", [True, False], ids=["calibrated", "uncalibrated"])
def test_the_readmes_python_snippet_runs_on_any_model(calibrated, tmp_path, sample_images):
    """The snippet, run as shown on the bundled (calibrated) model and on a model without a refusal threshold:
    ``refused`` is one bool per image either way."""
    import numpy as np

    from s3f_edge.runtime.predictor import default_model
    from s3f_edge.testing import saved_model

    model = default_model() if calibrated else saved_model(tmp_path / "plain.keras", "brisc2025", (32, 32, 1))
    code = readme_python_snippet()
    assert code.count('"deploy/model.onnx"') == 1 and code.count('"scan.png"') == 1
    namespace: dict = {}
    exec(code.replace('"deploy/model.onnx"', repr(str(model))).replace('"scan.png"', repr(str(sample_images[0]))),
         namespace)
    refused, predictor = namespace["refused"], namespace["predictor"]
    assert isinstance(refused, np.ndarray) and refused.dtype == bool and refused.shape == (1,)
    assert np.isfinite(namespace["probabilities"]).all()
    if calibrated:
        scores = namespace["ood_scores"]
        assert predictor.ood_threshold is not None and np.isfinite(scores).all()
        assert refused.tolist() == (scores > predictor.ood_threshold).tolist()
    else:
        assert predictor.ood_threshold is None and namespace["ood_scores"] is None and not refused.any()
