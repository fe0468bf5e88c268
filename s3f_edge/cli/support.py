"""How the command line reports: exit codes, one-line errors, interrupts, and the options every command shares.

The exit codes are the README's table (a test reads it and holds this module to it):

- 0: success.
- 1: an error found by looking at files, packages or results (``S3FEdgeError``): a missing or unreadable
  path, a file that is not what its name says, an empty folder, an output that exists or cannot be
  written, a missing package, a failed check.
- 2: a usage error, wrong from the command line alone (click's own code): an unknown option, a malformed
  value, a suffix the command does not take.
- 3: ``infer`` only: every file has a row, and some rows are errors.
- 130: interrupted (Ctrl-C); the message says how to continue.

Every error is one line on stderr that says what to do. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from s3f_edge.errors import InputError, MissingFileError, OutputError, S3FEdgeError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SOME_FILES_FAILED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

_RESUME_HINT = "s3f_edge.resume_hint"


def one_line(message: str) -> str:
    """``message`` on one line (engines' own messages may hold newlines)."""
    return " ".join(str(message).split())


def print_error(message: str) -> None:
    click.secho(f"Error: {one_line(message)}", err=True, fg="red")


def set_interrupt_hint(hint: Callable[[], str | None]) -> None:
    """What an interrupt of the running command should tell the user (asked at the moment of the interrupt)."""
    click.get_current_context().meta[_RESUME_HINT] = hint


class Command(click.Command):
    """A command with ``--verbose``, run with TensorFlow's native log noise filtered; Ctrl-C exits 130 with a
    line saying how to continue instead of click's bare "Aborted!"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(["--verbose"], is_flag=True, expose_value=True,
                                        help="Show TensorFlow/CUDA native log lines (also: S3F_EDGE_VERBOSE=1)."))

    def invoke(self, ctx: click.Context):
        from s3f_edge.logs import NativeLogFilter, verbose_requested

        parent_verbose = bool(ctx.parent and ctx.parent.params.get("verbose"))
        verbose = bool(ctx.params.pop("verbose", False)) or parent_verbose or verbose_requested()
        try:
            with NativeLogFilter(enabled=not verbose):
                return super().invoke(ctx)
        except KeyboardInterrupt:
            hint = ctx.meta.get(_RESUME_HINT)
            message = hint() if hint else None
            click.echo(f"\ninterrupted{': ' + message if message else ''}", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


class Group(click.Group):
    """The ``s3f-edge`` group: every error, whether found while parsing or while running, is one line."""

    command_class = Command

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()
            sys.exit(EXIT_USAGE)
        except click.UsageError as error:
            where = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            print_error(error.format_message() + where)
            sys.exit(EXIT_USAGE)
        except S3FEdgeError as error:
            print_error(str(error))
            sys.exit(EXIT_ERROR)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:  # an interrupt outside a command (while parsing)
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(result if isinstance(result, int) else EXIT_OK)


class AliasedOption(click.Option):
    """An option whose second and later names are old spellings, kept working but not shown in ``--help``."""

    def get_help_record(self, ctx):
        names, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = names


class FolderAfterOptionalValue(click.Argument):
    """A required FOLDER argument that, when missing because an option with an optional value (``--ray
    [ADDRESS]``) took the folder as its value, says so instead of only "Missing argument"."""

    optional_value_options = ("ray_address",)

    def process_value(self, ctx, value):
        try:
            return super().process_value(ctx, value)
        except click.MissingParameter:
            for name in self.optional_value_options:
                taken = ctx.params.get(name)
                if isinstance(taken, str) and os.path.isdir(taken):
                    option = next(p.opts[0] for p in ctx.command.params if p.name == name)
                    raise click.UsageError(f"{option} took {taken!r} as its value: put {option} after "
                                           f"{self.human_readable_name}", ctx) from None
            raise


def option_name(param: click.Parameter | None) -> str:
    """How the user spelled the parameter: '--model' for an option, 'FOLDER' for an argument."""
    if param is None:
        return "path"
    return param.opts[0] if isinstance(param, click.Option) else param.human_readable_name


class ExistingPath(click.Path):
    """``click.Path(exists=True)`` whose failures are found on disk, so they are errors (exit 1) that name the
    path, not usage errors: a missing path, or a file where a folder is wanted (or the reverse)."""

    def __init__(self, **kwargs):
        super().__init__(exists=True, **kwargs)

    def convert(self, value, param, ctx):
        name = option_name(param)
        kind = "folder" if not self.file_okay else "file" if not self.dir_okay else "file or folder"
        if not os.path.lexists(value):
            raise MissingFileError(f"{name}: no such {kind}: {value}; check the path")
        if not os.path.exists(value):
            raise MissingFileError(f"{name}: {value} is a broken link; check the path")
        if not self.dir_okay and os.path.isdir(value):
            raise InputError(f"{name}: {value} is a folder; give a file")
        if not self.file_okay and not os.path.isdir(value):
            raise InputError(f"{name}: {value} is a file; give a folder")
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as error:  # e.g. unreadable
            raise InputError(f"{name}: {error.format_message()}") from None


def overwrite_option(what: str):
    """``--overwrite``: the one way to replace a command's earlier outputs (``s3f_edge.outputs``)."""
    return click.option("--overwrite", is_flag=True,
                        help=f"Replace earlier results in {what} (by default an existing output is refused, "
                             "never silently replaced).")


class OutputPath(click.Path):
    """A path the command writes: a folder where a file is wanted, or a file where a folder is wanted, is found on
    disk, so it is an error (exit 1) that names the path and says what to give, not a usage error."""

    def __init__(self, **kwargs):
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value, param, ctx):
        name = option_name(param)
        if not self.dir_okay and os.path.isdir(value):
            raise OutputError(f"{name} {value} is a folder; give a file name")
        if not self.file_okay and os.path.exists(value) and not os.path.isdir(value):
            raise OutputError(f"{name} {value} is a file, not a folder; give a folder to write into")
        return super().convert(value, param, ctx)


class FiniteFloat(click.FloatRange):
    """A number option (optionally within a range, as ``click.FloatRange``) that must be finite: nan, inf and values
    that overflow (1e400) are usage errors, where a plain float would accept them (nan passes every comparison)."""

    name = "number"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
