"""The judges of DICOM files written by s3f-edge: DCMTK's dsrdump and dcmdump, and dicom3tools' dciodvfy where
installed. `make test` installs both and sets S3F_EDGE_REQUIRE_DCMTK and S3F_EDGE_REQUIRE_DICOM3TOOLS, so a missing
judge fails the tests there instead of skipping them."""
import os
import subprocess
from pathlib import Path

import pydicom
import pytest

from s3f_edge.testing import DCMTK_ENV, DICOM3TOOLS_ENV, tools_missing

DCMTK = tools_missing("dsrdump", "dcmdump", package="dcmtk")
DCIODVFY = tools_missing("dciodvfy", package="dicom3tools")
needs_dcmtk = pytest.mark.skipif(DCMTK is not None and not os.environ.get(DCMTK_ENV),
                                 reason=f"no DCMTK: {DCMTK} (make test installs it)")


# ---------------------------------------------------------------- the judges

# DCMTK 3.6.7 saying what it cannot check, not what is wrong: its VR checker knows ASCII and Latin-1 only, and its SR
# reader no multi-valued (ISO 2022 code extension) character set. Each is allowed only for the SR's own character set.
CHARSET_LIMITS = ("W: The VR checker does not support this Specific Character Set: {}",
                  "W: Reading unknown/unsupported SpecificCharacterSet ({})")


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=120)


def problems(output: str, charset: str) -> list[str]:
    """The lines of a DCMTK tool's output that report a problem (W:, E:, F:, Warning, Error)."""
    allowed = {limit.format(charset) for limit in CHARSET_LIMITS} if charset not in ("", "ISO_IR 100") else set()
    return [line for line in output.splitlines() if (line[:2] in ("W:", "E:", "F:") or "Warning" in line
                                                     or "Error" in line) and line.strip() not in allowed]


def charset_of(path: Path) -> str:
    value = pydicom.dcmread(path, stop_before_pixels=True).get("SpecificCharacterSet") or ""
    return value if isinstance(value, str) else "\\".join(value)


def judged(path: Path) -> list[str]:
    """What dsrdump and dcmdump (and dciodvfy, where installed) find wrong with an SR file; [] when nothing."""
    if DCMTK:
        pytest.fail(f"{DCMTK_ENV} is set but {DCMTK}")
    found, charset = [], charset_of(path)
    for command in (("dsrdump", "+Pc", "+Pt", "+Psu", "+Pl", str(path)), ("dcmdump", "-dc", str(path))):
        done = run(*command)
        if done.returncode:
            found.append(f"{command[0]} exited {done.returncode}")
        found += [f"{command[0]}: {line}" for line in problems(done.stdout + done.stderr, charset)]
    if DCIODVFY and os.environ.get(DICOM3TOOLS_ENV):
        pytest.fail(f"{DICOM3TOOLS_ENV} is set but {DCIODVFY}")
    if not DCIODVFY:  # IOD checks: errors only (its warnings are about values copied from the source)
        done = run("dciodvfy", str(path))
        found += [f"dciodvfy: {line}" for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        found += [f"dciodvfy exited {done.returncode}"] * (done.returncode < 0)
    return found
