"""What several commands share: option callbacks (sizes, suffixes, lists), tables, and checks made before any
work (a folder of images, outputs that may be written)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from s3f_edge.cli.support import ExistingPath


def needs(purpose: str, stack: tuple[str, ...]) -> None:
    from s3f_edge.dependencies import require

    require(purpose, "train", *stack)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = lambda row: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?$", re.IGNORECASE)


def size_option(ctx, param, value):
    return parse_size(value)


def parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = SIZE_PATTERN.match(value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a size; use 128 or 224x256 (height x width)")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if min(height, width) < 16:
        raise click.BadParameter(f"{value!r}: give sizes of at least 16 pixels, e.g. 128 or 384x512")
    return height, width


def suffix(*allowed: str, what: str):
    """A callback refusing a path whose suffix the option does not take (a usage error: the name alone shows it)."""

    def check(ctx, param, value):
        values = value if isinstance(value, tuple) else (value,)
        for path in values:
            if path is not None and Path(path).suffix.lower() not in allowed:
                choices = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
                raise click.BadParameter(f"{Path(path).name}: {what} must end in {choices}")
        return value

    return check


def progress_verbosity(quiet: bool) -> int:
    """Keras's verbose: 0 quiet, 1 a live progress bar on a terminal, 2 one line per epoch in a log file (the bar's
    colour codes and carriage returns would fill it)."""
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def names(value: str | None) -> list[str] | None:
    """A comma-separated list option as a list (None when not given)."""
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def int_list(value: str, name: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{name}: {value!r} is not a comma-separated list of integers") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{name}: give positive integers, e.g. 1,8,32")
    return numbers


def image_folder(ctx, param, value):
    """--images of bench: a folder of images, 'random', or None; a folder is checked like any path argument."""
    if value is None or value == "random":
        return value
    folder = ExistingPath(file_okay=False, path_type=Path).convert(value, param, ctx)
    from s3f_edge.data.files import require_images

    require_images(folder, param.get_error_hint(ctx))
    return folder
