"""The documentation stays true: every relative link resolves, every command shown exists with the options it
uses, every generated table equals the file it comes from, the README stays short, and no file of the repository
(pages, docstrings, comments, messages, results, names) speaks of how the project was built."""
import io
import re
import shlex
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from s3f_edge.cli import main

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "DEVELOPERS.md", *sorted((REPO / "docs").glob("*.md")),
         REPO / "s3f_edge" / "assets" / "default_model" / "MODEL_CARD.md"]
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


# How the project was built is not what it is: no page, docstring, comment, message, results file or file name
# speaks of tickets, acceptance checklists or the private notes the code was written from. Each entry: the kind (for
# the message), its pattern, the other sense the same words legitimately have (blanked out before the search), and
# whether Python identifiers are searched too.
LEFTOVERS = [
    ("spec section", r"\bspec(?:ification)?(?:'s)? (?:sections?|§)|\bspec §", None, True),
    ("issue", r"\bissue", r"github\.com/(?!Saiful185/S3F-Net)[\w.-]+/[\w.-]+/issues/\d+", True),  # another project's
    ("done when", r"done[ _-]?when", None, True),
    ("acceptance bar", r"\bbars?\b",  # a line about a progress bar means that bar; plots and test images have bars
     r"^.*\bprogress[ _]bars?\b.*$|\b(?:error|colou?r) bars?\b|\bdiagram's bars\b|\bprobability as a bar\b", False),
    ("goal met?", r"\bmet\?|\bNOT met\b|\b[Gg]oals?\b[^\n|]{0,80}?\bmet\b", None, False),
    ("history", r"\bbefore (?:this|the) (?:feature|change|fix|refactor\w*)\b|\bbefore the \w+ existed\b"
                r"|\bfirst study\b|\bnew default\b|\bprevious export\b|\bfirst export\b", None, False),
    # the data root is $S3F_EDGE_DATA, never a folder beside the checkout; a results file records the path it used
    ("sibling checkout", r"\.\./shared\b|\bshared/data\b", r'^\s*"data(?:_dir)?": "[^"]*",?$', False),
]
CASE_SENSITIVE = {"goal met?"}  # "NOT met"
UI_SUFFIXES = {".js", ".css", ".j2", ".html"}  # the review pages' scripts and style: a "bar" there is on the screen
WORD_LISTS = {"tests/test_docs.py"}  # the lists themselves
NAME_WORDS = re.compile(r"\b(?:issues?|goals?|done when|checklist|spec section)\b")


def repository_files() -> list[str]:
    """Every file of the checkout that git tracks or would track (new files too), relative to it."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode == 0:
        return sorted({name for name in listed.stdout.splitlines() if (REPO / name).is_file()})
    skip = {".git", "build", "dist", "__pycache__", ".pytest_cache", "test-output", "demo-output", "runs"}
    return sorted(str(path.relative_to(REPO)) for path in REPO.rglob("*") if path.is_file()
                  and not any(part in skip or part.startswith(".venv") or part.endswith(".egg-info")
                              for part in path.relative_to(REPO).parts))


def words_of(name: str, text: str) -> list[tuple[int, str, bool]]:
    """(line, text, is an identifier) of what a file says: a Python file's comments and string literals
    (docstrings, messages) and its identifiers; every other text file whole."""
    if not name.endswith(".py"):
        return [(number, line, False) for number, line in enumerate(text.splitlines(), 1)]
    said = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    pieces = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in said:
            pieces += [(token.start[0] + i, line, False) for i, line in enumerate(token.string.splitlines())]
        elif token.type == tokenize.NAME:
            pieces.append((token.start[0], token.string, True))
    return pieces


def leftovers(name: str, text: str) -> list[str]:
    """Each leftover of how the project was built in one file, as 'name:line: [kind] text'."""
    found = []
    for number, line, identifier in words_of(name, text):
        for kind, pattern, other_sense, in_identifiers in LEFTOVERS:
            if (identifier and not in_identifiers) or (kind == "acceptance bar" and Path(name).suffix in UI_SUFFIXES):
                continue
            words = re.sub(other_sense, " ", line, flags=re.I) if other_sense else line
            if re.search(pattern, words, flags=0 if kind in CASE_SENSITIVE else re.I):
                found.append(f"{name}:{number}: [{kind}] {line.strip()[:160]}")
    return found


def text_of(path: Path) -> str | None:
    """A file's text, or None for a binary file (images, models)."""
    data = path.read_bytes()
    try:
        return None if b"\0" in data[:8192] else data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_file_speaks_of_how_the_project_was_built():
    found = []
    for name in repository_files():
        text = None if name in WORD_LISTS else text_of(REPO / name)
        found += leftovers(name, text) if text is not None else []
    assert not found, "say what the code does and why, not how or by which checklist it was built:\n" + "\n".join(found)


def test_no_file_name_speaks_of_how_the_project_was_built():
    names = [name for name in repository_files() if NAME_WORDS.search(re.sub(r"[^a-z0-9]+", " ", name.lower()))]
    assert not names, f"name these files after what they hold: {names}"


def test_the_leftover_search_catches_each_kind_and_spares_the_other_senses():
    caught = leftovers("x.md", "\n".join([
        "As in spec section 3.2.", "Fixes issue 11.", "The done-when command.", "It clears the issue's bar.",
        "| goal | measured | met? |", "Goals: cold start <= 1.0 s: met.", "Kept before the family existed.",
        "Data in ../shared/data by default."]))
    assert [line.split("[", 1)[1].split("]", 1)[0] for line in caught] == [
        "spec section", "issue", "done when", "issue", "acceptance bar", "goal met?", "goal met?", "history",
        "sibling checkout"]
    spared = ["No progress bar.", "with error bars", "every probability as a bar", "refused, not a goal",
              "see https://github.com/onnx/tensorflow-onnx/issues/2262", "the threshold is met on 3 of 3 seeds"]
    assert leftovers("x.md", "\n".join(spared)) == []
    assert leftovers("page.css", ".bar { height: 1rem; }") == []
    # Python: comments, strings and identifiers; a tqdm bar called `bar` is code, not a claim
    assert leftovers("x.py", "bar = tqdm()\nbar.update(1)  # advance the progress bar\n") == []
    assert leftovers("x.py", '"""Per spec section 4."""\nDONE_WHEN = 1  # the issue asks for it\n') == [
        'x.py:1: [spec section] """Per spec section 4."""', "x.py:2: [done when] DONE_WHEN",
        "x.py:2: [issue] # the issue asks for it"]
    assert NAME_WORDS.search(re.sub(r"[^a-z0-9]+", " ", "research/results/recipe_done_when.md"))
    assert not NAME_WORDS.search(re.sub(r"[^a-z0-9]+", " ", "benchmarks/results/speed_summary.md"))


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
