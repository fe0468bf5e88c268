"""What a training run's directory holds: the files `train` writes (and, with --overwrite, removes first), the
outputs other commands make from its model, and whether --resume can continue it."""
from __future__ import annotations

import json
from pathlib import Path

from s3f_edge.errors import InputError, MissingFileError

# The files `train` writes into a run directory.
RUN_FILES = ("model.keras", "last.keras", "config.json", "state.json", "history.csv", "metrics.json", "skipped.csv",
             "training_curves.png")
RUN_FILE_PATTERNS = ("validation_*.png", "test_*.png")
# What other commands write into a run directory by default, from its model: --overwrite refuses to leave them
# beside a new model, and does not delete them either (they are the user's exports and reports).
DERIVED_PATTERNS = ("export", "evaluate-*", "*.precise-bn.keras")


def run_files(run_dir: Path) -> list[Path]:
    """The files of an earlier run in ``run_dir``: only names `train` writes.

    Returns:
        Existing and not-yet-existing paths of the fixed names, and the existing plots.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [run_dir / name for name in RUN_FILES]
    return found + [p for pattern in RUN_FILE_PATTERNS for p in run_dir.glob(pattern)]


def derived_outputs(run_dir: Path) -> list[Path]:
    """Exports and reports other commands made from the model in ``run_dir`` (their default locations)."""
    run_dir = Path(run_dir)
    return sorted(p for pattern in DERIVED_PATTERNS for p in run_dir.glob(pattern)) if run_dir.is_dir() else []


def is_resumable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that --resume can continue (at least one finished epoch)."""
    return all((Path(run_dir) / name).exists() for name in ("config.json", "state.json", "last.keras"))


def read_run_json(path: Path, what: str) -> dict:
    """A JSON file of a run directory (config.json, state.json).

    Args:
        path: the file.
        what: what it should be, for the message (e.g. "a run's state").

    Raises:
        InputError: the file is not JSON.
    """
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not {what} ({error}); start a new run with --out") from None


def saved_options(run_dir: Path) -> dict:
    """The options a run was started with, from its config.json (for --resume).

    Raises:
        MissingFileError: ``run_dir`` holds no resumable run.
        InputError: its config.json is not a run's configuration.
    """
    config = Path(run_dir) / "config.json"
    if not is_resumable(run_dir):
        raise MissingFileError(f"{run_dir} holds no resumable run (config.json, state.json and last.keras, written "
                               "when the first epoch ends); start it again with --out and --overwrite")
    try:
        return read_run_json(config, "a run's configuration")["options"]
    except (KeyError, TypeError) as error:
        raise InputError(f"{config} is not a run's configuration (no {error}); start a new run with --out") from None
