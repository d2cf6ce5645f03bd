"""The CLI's one error boundary: a user error is one line on stderr and exit code 2.

A usage mistake, a freight error, a file or a database that refuses, a missing extra:
one line, never a traceback. A bug (any other exception) keeps its traceback.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from freight import ConfigError
from freight.cli import app
from freight.cli._errors import _Commands
from tests.services import POSTGRES_URL, require

runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    """Run ``freight ARGS``; check it ended with one error line and exit 2; return it."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("freight: error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.csv"
    path.write_text("id,name\n1,ann\n")
    return path


def test_a_store_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(["list", "--store", str(tmp_path)])  # a directory, not a file
    assert str(tmp_path) in line  # named


def test_a_target_database_that_cannot_be_opened_is_one_line(users: Path, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file, not a folder")
    target = f"sqlite:///{tmp_path / 'plain' / 'app.db'}"
    line = one_line_error(
        ["load", str(users), "--into", target, "--table", "t", "--store", str(tmp_path / "f.db")]
    )
    assert "plain" in line


def test_an_unreachable_postgresql_names_where_it_is_and_never_the_password(
    users: Path, tmp_path: Path
) -> None:
    into = "postgresql://nobody:s3cret@127.0.0.1:1/nowhere"
    line = one_line_error(
        ["load", str(users), "--into", into, "--table", "t", "--store", str(tmp_path / "f.db")]
    )
    assert "cannot reach PostgreSQL at 127.0.0.1:1/nowhere" in line
    assert "s3cret" not in line


def test_a_connection_string_psycopg_cannot_read_is_one_line(users: Path, tmp_path: Path) -> None:
    into = "postgresql://127.0.0.1/test?bogus=1"
    line = one_line_error(
        ["load", str(users), "--into", into, "--table", "t", "--store", str(tmp_path / "f.db")]
    )
    assert 'bad PostgreSQL connection string: invalid URI query parameter: "bogus"' in line
    assert "expected postgresql://USER@HOST:PORT/DB" in line


def test_a_missing_extra_says_what_to_install(
    users: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As without psycopg installed: importing the connector fails.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "freight.connectors.postgres")
    line = one_line_error(
        ["load", str(users), "--into", POSTGRES_URL, "--table", "t",
         "--store", str(tmp_path / "f.db")]
    )  # fmt: skip
    assert "pip install 'freight[postgres]'" in line


def test_usage_mistakes_are_one_line_in_the_test_runner_too() -> None:
    assert "Missing argument 'file'" in one_line_error(["load"])
    assert "No such command 'explode'" in one_line_error(["explode"])


def test_no_arguments_print_the_help_and_exit_0() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 0
    assert "load" in result.stdout


# The boundary itself, on a throwaway app of the same class.
demo = typer.Typer(cls=_Commands)


@demo.command()
def fail(kind: str) -> None:
    """Raise the error named ``kind``."""
    if kind == "config":
        raise ConfigError("chunk_size must be >= 1, got 0; pass a positive int")
    if kind == "file":
        Path("/no/such/dir/data.csv").read_text()
    if kind == "sqlite":
        sqlite3.connect(":memory:").execute("SELECT * FROM nowhere")
    if kind == "postgres":
        with psycopg.connect(POSTGRES_URL) as conn:
            conn.execute("SELECT 1/0")
    if kind == "abort":
        raise typer.Abort
    if kind == "extra":
        raise ImportError("No module named 'pyarrow'", name="pyarrow")
    raise RuntimeError("a bug in freight")


@demo.command()
def other() -> None:
    """A second command, so that the app is a group of commands."""


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("config", "freight: error: chunk_size must be >= 1, got 0; pass a positive int"),
        ("file", "freight: error: No such file or directory: '/no/such/dir/data.csv'"),
        ("sqlite", "freight: error: no such table: nowhere"),
        ("extra", "freight: error: No module named 'pyarrow': pip install 'freight[parquet]'"),
    ],
)
def test_each_kind_of_user_error_is_one_line_and_exit_2(kind: str, line: str) -> None:
    result = runner.invoke(demo, ["fail", kind])
    assert (result.exit_code, result.stderr) == (2, line + "\n")


def test_an_error_the_database_raises_is_one_line() -> None:
    require("127.0.0.1", 5432, "PostgreSQL")
    result = runner.invoke(demo, ["fail", "postgres"])
    assert (result.exit_code, result.stderr) == (2, "freight: error: division by zero\n")


def test_abort_is_one_line_and_exit_1() -> None:
    result = runner.invoke(demo, ["fail", "abort"])
    assert (result.exit_code, result.stderr) == (1, "freight: aborted\n")


def test_a_bug_keeps_its_traceback() -> None:
    result = runner.invoke(demo, ["fail", "bug"])
    assert isinstance(result.exception, RuntimeError)  # raised, not turned into a line
    assert result.stderr == ""
