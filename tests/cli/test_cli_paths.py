"""The freight command's remaining paths: JSONL loads, a run that stops early (exit 1,
its reason, resumed from the module it came from), the load options that apply to
PostgreSQL only, and loads into a PostgreSQL table that already exists."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.main import get_command
from typer.testing import CliRunner

from freight.cli import app
from freight.store import SqliteStore
from tests.services import POSTGRES_URL, require

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_a_jsonl_file_loads_into_sqlite(tmp_path: Path) -> None:
    data = tmp_path / "events.jsonl"
    data.write_text("".join(json.dumps({"id": i, "kind": "click"}) + "\n" for i in range(5)))
    db = tmp_path / "app.db"
    code, out, _ = invoke(
        "load", str(data), "--into", f"sqlite:///{db}", "--table", "events", "--json",
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["summary"]["succeeded"] == 5
    with sqlite3.connect(db) as conn:
        assert conn.execute('SELECT count(*) FROM "events"').fetchone() == (5,)


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("users.txt", [], "cannot load users.txt: give a .csv or .jsonl file"),
        ("users.csv", ["--schema", "s"], "--schema applies to PostgreSQL targets"),
        ("users.csv", ["--types", "nope=bigint"], "--types names unknown column(s) ['nope']"),
    ],
)
def test_load_refuses_what_it_cannot_do_in_one_line(
    tmp_path: Path, name: str, extra: list[str], message: str
) -> None:
    data = tmp_path / name
    data.write_text("id\n1\n")
    code, _, err = invoke(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", "t",
        "--store", str(tmp_path / "f.db"), *extra,
    )  # fmt: skip
    assert (code, err.count("\n")) == (2, 1)
    assert message in err


def test_a_run_that_stops_early_exits_1_with_its_reason_and_resumes_from_its_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flaky.py").write_text(
        "from freight import Job\n"
        "from freight.store import SqliteStore\n"
        "def sink(batch):\n"
        "    return [ValueError('bad') if i % 2 else None for i in batch]\n"
        f"store = SqliteStore({str(tmp_path / 's.db')!r})\n"
        "job = Job('flaky', range(20), sink, chunk_size=5, max_failures=1, store=store)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = invoke("run", "flaky:job")
    assert code == 1  # failed: the run ended early
    assert "flaky" in out
    assert "reason: " in out
    assert "max_failures=1" in out
    code, out, _ = invoke("resume", "flaky", "--store", str(tmp_path / "s.db"), "--json")
    assert code == 1  # rebuilt from flaky:job, which stops again at its first failures
    assert json.loads(out)["job_name"] == "flaky"


def test_the_command_returns_its_exit_code_when_not_standalone(tmp_path: Path) -> None:
    command = get_command(app)
    SqliteStore(tmp_path / "f.db").close()
    assert command.main(["list", "--store", str(tmp_path / "f.db")], standalone_mode=False) in (
        0,
        None,
    )
    assert command.main(["list", "--store", str(tmp_path / "no.db")], standalone_mode=False) == 2
    assert command.main(["report", "nobody"], standalone_mode=False) == 2


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, amount numeric)").format(
                sql.Identifier(name, "pay")
            )
        )
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def load_pg(tmp_path: Path, schema: str, data: Path, *extra: str) -> tuple[int, str, str]:
    return invoke(
        "load", str(data), "--into", POSTGRES_URL, "--table", "pay", "--schema", schema,
        "--store", str(tmp_path / "f.db"), *extra,
    )  # fmt: skip


def test_a_load_into_an_existing_table_takes_its_column_types(schema: str, tmp_path: Path) -> None:
    data = tmp_path / "pay.jsonl"
    data.write_text('{"id": 1, "amount": "1.50"}\n{"id": 2, "amount": "x"}\n')
    code, out, _ = load_pg(tmp_path, schema, data, "--key", "id", "--json")
    assert code == 3  # a row dead-lettered
    report = json.loads(out)
    assert report["summary"]["succeeded"] == 1  # "x" is not a numeric: dead-lettered
    assert report["errors"][0]["item"] == "line 2"


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        ("id,amount\n1,2\n", ["--key", "nope"], "--key 'nope' is not a column of pay.csv"),
        ("amount,id\n2,1\n", [], "the columns of 'pay' are not the file's, in its order"),
    ],
)
def test_a_csv_that_does_not_fit_the_existing_table_is_refused(
    schema: str, tmp_path: Path, text: str, extra: list[str], message: str
) -> None:
    data = tmp_path / "pay.csv"
    data.write_text(text)
    code, _, err = load_pg(tmp_path, schema, data, *extra)
    assert (code, err.count("\n")) == (2, 1)
    assert message in err


def test_a_key_that_is_not_a_column_of_the_existing_table_is_refused(
    schema: str, tmp_path: Path
) -> None:
    data = tmp_path / "pay.jsonl"
    data.write_text('{"id": 1, "amount": 2}\n')
    code, _, err = load_pg(tmp_path, schema, data, "--key", "nope")
    assert code == 2
    assert "--key 'nope' is not a column of the table 'pay'" in err


def test_a_file_without_a_readable_record_cannot_make_a_table(schema: str, tmp_path: Path) -> None:
    data = tmp_path / "broken.jsonl"
    data.write_text("not json\n")
    code, _, err = invoke(
        "load", str(data), "--into", POSTGRES_URL, "--table", "new", "--schema", schema,
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert code == 2
    assert "cannot infer the columns: the file has no readable record" in err


def test_ctrl_c_during_a_run_ends_it_with_one_line_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stopped.py").write_text(
        "from freight import Job\n"
        "from freight.store import SqliteStore\n"
        "def sink(batch):\n"
        "    raise KeyboardInterrupt\n"
        f"job = Job('stopped', range(3), sink, store=SqliteStore({str(tmp_path / 's.db')!r}))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = invoke("run", "stopped:job")
    assert code == 130
    assert err.endswith("freight: stopped at once; run the same command again to resume\n")
