"""The layering rule (DEVELOPERS.md): layers import only downwards, and the runtime and preprocessing
never import the training stack. Read from the source (every import statement) and checked in a
fresh process (what `infer` and `bench` on an ONNX file actually load)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "s3f_edge"
SHARED = {"s3f_edge", "s3f_edge.errors", "s3f_edge.dependencies", "s3f_edge.outputs", "s3f_edge.results",
          "s3f_edge.contract"}  # importable from every layer
# Which s3f_edge packages each layer may import (besides SHARED). cli/ sits on top and may use any.
ALLOWED = {
    "data": {"data"},
    "model": {"model"},
    "runtime": {"data", "runtime"},
    "report": {"data", "report"},  # pages of results: reads results files (s3f_edge.results), embeds images
    "train": {"data", "model", "runtime", "report", "train"},
    "export": {"data", "model", "runtime", "export"},
    "bench": {"data", "model", "runtime", "train", "export", "bench"},  # the matrix exports and scores
    "dicom": {"model", "runtime", "dicom"},  # DICOM reports (the model's class codes) and the node (the loop)
    "tasks": {"data", "model", "runtime", "report", "train", "export", "bench", "dicom", "tasks"},  # whole commands
}
TRAINING_STACK = {"tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common", "sklearn", "matplotlib", "scipy"}
ENGINES = {"onnxruntime", "tensorrt", "cuda", "pydicom"}
FRAMEWORKS = {"tensorflow", "keras", "tf2onnx", "onnx"}  # never imported by data/ or runtime/, even lazily
# Modules that load whenever the CLI starts or a deployment runs: no heavy import at module level.
LIGHT = ["s3f_edge/__init__.py", *[str(p.relative_to(PACKAGE.parent)) for p in (PACKAGE / "cli").glob("*.py")],
         "s3f_edge/tasks/__init__.py", *[str(p.relative_to(PACKAGE.parent)) for p in (PACKAGE / "dicom").glob("*.py")],
         "s3f_edge/model/class_codes.py", "s3f_edge/errors.py",
         "s3f_edge/dependencies.py", "s3f_edge/logs.py", "s3f_edge/outputs.py", "s3f_edge/contract.py",
         "s3f_edge/results.py",
         "s3f_edge/model/__init__.py", "s3f_edge/model/presets.py", "s3f_edge/export/choices.py",
         *[str(p.relative_to(PACKAGE.parent)) for p in (PACKAGE / "runtime").glob("*.py")],
         *[str(p.relative_to(PACKAGE.parent)) for p in (PACKAGE / "data").glob("*.py")]]
# The runtime's only ways into the training stack, taken only when a .keras model is handed to it.
LAZY_KERAS = {"s3f_edge/runtime/keras_backend.py", "s3f_edge/runtime/gradcam.py"}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in top_level))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "s3f_edge" and parts[1] in ALLOWED else None


def sources():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_layers_import_only_downwards(path):
    relative = str(path.relative_to(PACKAGE.parent))
    own = layer_of("s3f_edge." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    if own is None:  # cli/, logs.py and the shared modules
        return
    wrong = []
    for module, at_top in imports(path):
        if module in SHARED or not module.startswith("s3f_edge"):
            continue
        target = layer_of(module)
        if target in ALLOWED[own]:
            continue
        if relative == "s3f_edge/runtime/keras_backend.py" and target == "model" and not at_top:
            continue  # loading a .keras file needs the model's layers: lazily, on that path only
        wrong.append(module)
    assert not wrong, f"{relative} ({own}) imports {wrong}; allowed: {sorted(ALLOWED[own])}"


@pytest.mark.parametrize("relative", LIGHT)
def test_deployment_modules_import_nothing_heavy_at_load(relative):
    path = PACKAGE.parent / relative
    heavy = [m for m, at_top in imports(path) if at_top and m.split(".")[0] in TRAINING_STACK | ENGINES]
    assert not heavy, f"{relative} imports {heavy} when it loads"
    if relative.startswith(("s3f_edge/runtime/", "s3f_edge/data/")) and relative not in LAZY_KERAS:
        anywhere = [m for m, _ in imports(path) if m.split(".")[0] in FRAMEWORKS]
        assert not anywhere, f"{relative} imports the training framework ({anywhere})"


PROBE = """
import json, sys
from s3f_edge.cli import main
try:
    main(sys.argv[1:], prog_name="s3f-edge")
except SystemExit as stop:
    code = stop.code
print(json.dumps({"exit": code, "loaded": sorted(m for m in sys.modules if m.split('.')[0] in %r)}))
"""


def run_cli_and_report_imports(*arguments: str, cwd: Path) -> dict:
    probe = PROBE % sorted(TRAINING_STACK | {"tensorrt"})
    done = subprocess.run([sys.executable, "-c", probe, *arguments], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_infer_and_bench_on_onnx_load_no_training_stack(tmp_path, sample_dir):
    bundled = PACKAGE / "assets" / "default_model" / "model.onnx"
    infer = run_cli_and_report_imports("infer", str(sample_dir / "test"), "--recursive", "--out",
                                       str(tmp_path / "r.csv"), "--quiet", cwd=tmp_path)
    assert infer == {"exit": None, "loaded": []} or infer == {"exit": 0, "loaded": []}, infer
    bench = run_cli_and_report_imports("bench", str(bundled), "--batch-sizes", "1", "--duration", "0.1", "--warmup",
                                       "0", "--no-gemm", cwd=tmp_path)
    assert bench["loaded"] == [] and bench["exit"] in (None, 0), bench


def test_import_s3f_edge_is_cheap():
    code = ("import sys, s3f_edge, s3f_edge.runtime, s3f_edge.data, s3f_edge.model, s3f_edge.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'onnx')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def import_graph() -> dict[str, set[str]]:
    """s3f_edge module -> the s3f_edge modules it imports (lazily or not), from the source."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in sources()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, _ in imports(path):
            while module and module not in modules:  # `from s3f_edge.pkg.mod import name`: the module itself
                module = module.rpartition(".")[0]
            if module and module != name and module != "s3f_edge":
                targets.add(module)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_circle():
    assert circles(import_graph()) == []
    # the check itself finds a circle when there is one
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
