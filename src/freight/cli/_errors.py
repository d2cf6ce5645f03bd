"""freight's one error boundary: what a user sees when a command raises, and its exit code.

Rules: :class:`_Commands` wraps every command (and the group's own usage errors). A
usage mistake or a user error (a freight error, a file, a database, a missing extra)
is one line on stderr, ``freight: error: …``, and exit code 2 (:func:`_error`); anything
else is a bug in freight and keeps its traceback. The exit codes a command that runs a
job ends with are defined here (:data:`EXIT_CODES`, the table the help shows). This
module imports nothing of :mod:`freight.cli._app`, which re-exports :class:`_Commands`.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from freight._errors import FreightError

# The extra that provides a module, for an ImportError that does not say it itself.
_EXTRAS = {
    "psycopg": "postgres",
    "pymysql": "mysql",
    "zstandard": "zstd",
    "psycopg_pool": "postgres",
    "pyarrow": "parquet",
    "duckdb": "trace",
    "prometheus_client": "prometheus",
}

# What a command that runs a job (load, run, resume, retry-failed) exits with.
EXIT_LANDED = 0
"""Every item landed (or the command did what it was asked)."""
EXIT_STOPPED = 1
"""The run failed, was cancelled or stopped early (over --max-failures): run it again."""
EXIT_USER_ERROR = 2
"""A user error: one line on stderr says what was wrong and how to fix it."""
EXIT_DEAD_LETTERS = 3
"""The run finished, but some items were dead-lettered (``freight report`` lists them)."""
EXIT_INTERRUPTED = 130
"""A second Ctrl-C stopped the run at once: the same command again resumes it."""

EXIT_CODES = f"""\b
Exit codes (load, run, resume, retry-failed):
  {EXIT_LANDED}    every item landed
  {EXIT_STOPPED}    the run failed, was cancelled or stopped early (--max-failures,
       --max-failure-rate): run the same command again to resume it
  {EXIT_USER_ERROR}    a user error: one line on stderr says what to fix
  {EXIT_DEAD_LETTERS}    finished, but some rows were dead-lettered: see the report
       (freight report JOB), fix them, then freight retry-failed JOB
  {EXIT_INTERRUPTED}  stopped at once by a second Ctrl-C: run the same command again"""
"""The exit codes, as ``freight --help`` and ``freight load --help`` show them."""


class _Commands(TyperGroup):
    """freight's commands with their one error boundary (see the module docstring).

    It wraps ``main``, which both the console command and ``CliRunner`` call, so the
    group's own usage errors ("No such command") pass through it as well.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except Exception as exc:
            code = _exit_code(exc)
            if code is None:
                raise  # a bug: its traceback is what a report needs
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _exit_code(exc: Exception) -> int | None:
    """Print the one line ``exc`` deserves and return the exit code; ``None`` for a bug."""
    if isinstance(exc, typer.Abort):
        typer.echo("freight: aborted", err=True)
        return 1
    # Typer's usage errors (its own copy of click's UsageError): duck-typed, since
    # the class is not part of typer's public API.
    if getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message"):
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            return 0
        where = ctx.command_path if ctx is not None else "freight"
        return _error(f"{exc.format_message()} (see `{where} --help`)")
    message = _user_error(exc)
    return None if message is None else _error(message)


def _user_error(exc: Exception) -> str | None:
    """The one line a user error prints, or ``None`` when ``exc`` is a bug."""
    if isinstance(exc, ImportError) and exc.name in _EXTRAS:
        return f"{exc}: pip install 'freight[{_EXTRAS[exc.name]}]'"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {str(exc.filename)!r}"
    psycopg = sys.modules.get("psycopg")  # the database refused (imported if it was used)
    refused = psycopg is not None and isinstance(exc, psycopg.Error)
    if isinstance(exc, FreightError | ImportError | OSError | sqlite3.Error) or refused:
        return _one_line(exc)
    return None


def _error(message: str) -> int:
    """Print a user error's one line; return its exit code, 2."""
    typer.echo(f"freight: error: {message}", err=True)
    return EXIT_USER_ERROR


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
