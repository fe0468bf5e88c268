"""The install extras keep one CUDA major each and exclude one another (pyproject.toml)."""
import re

import pytest
from conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS = PROJECT["project"]["optional-dependencies"]


def test_each_gpu_extra_pins_one_cuda_major():
    for extra, cuda in (("gpu", 12), ("gpu-cu13", 13)):
        requirements = {re.split(r"[<>=~ ]", r)[0]: r for r in EXTRAS[extra]}
        assert f"tensorrt-cu{cuda}" in requirements, (extra, requirements)
        assert (f">={cuda}" in requirements["cuda-python"]
                and f"<{cuda + 1}" in requirements["cuda-python"]), requirements
        assert "onnxruntime" not in requirements and "onnxruntime-gpu" in requirements
    assert "onnxruntime-gpu" not in str(EXTRAS["cpu"]) and "tensorrt" not in str(EXTRAS["cpu"])


def test_engine_extras_are_declared_as_conflicts():
    declared = [{entry["extra"] for entry in group} for group in PROJECT["tool"]["uv"]["conflicts"]]
    assert {"cpu", "gpu", "gpu-cu13"} in declared
