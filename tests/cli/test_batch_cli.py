"""``freight batch`` and ``freight worker``: managed batches from the command line.

The input file is the OpenAI batch input format, checked whole before anything is
stored (a bad line is one error naming its line, exit 2); the output is the OpenAI
batch output format, one line per request in submission order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from freight import BatchSpec, ConfigError
from freight.cli import app
from freight.cli._batch import read_input
from freight.manager import BatchManager
from tests.services import POSTGRES_URL, require

ROOT = Path(__file__).resolve().parents[2]

APP = """\
import os
import time

from freight import BatchSpec
from freight.manager import BatchManager

manager = BatchManager(
    {store!r}, lease=2.0, poll_interval=0.05, max_body_bytes=200, max_requests=500
)


def echo(bodies):
    time.sleep({delay})
    pid = os.getpid()
    return [
        ValueError(f"cannot echo {{b['n']}}") if b.get("fail") else {{"n": b["n"], "pid": pid}}
        for b in bodies
    ]


manager.register("/v1/echo", echo, spec=BatchSpec(size={size}))
"""

runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    """Run ``freight ARGS``; check it ended with one error line and exit 2; return it."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("freight: error: ")
    assert "Traceback" not in result.output
    return lines[0]


def jsonl(path: Path, *lines: object) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


def request(custom_id: str, n: int = 0, url: str = "/v1/echo") -> dict[str, object]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"n": n}}


# -- the input file ---------------------------------------------------------------------------


ids = st.lists(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
    min_size=1,
    max_size=20,
    unique=True,
)
bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@settings(max_examples=50, deadline=None)
@given(custom_ids=ids, data=st.data())
def test_every_valid_line_is_read_back_in_order(
    custom_ids: list[str], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sent = [(i, data.draw(bodies)) for i in custom_ids]
    path = tmp_path_factory.mktemp("in") / "batch.jsonl"
    jsonl(path, *({"custom_id": i, "url": "/v1/x", "body": b} for i, b in sent))
    endpoint, read = read_input(path, None)
    assert endpoint == "/v1/x"
    assert [(r.custom_id, r.body) for r in read] == sent
    assert [r.line for r in read] == list(range(1, len(sent) + 1))


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 30), data=st.data())
def test_a_bad_line_anywhere_is_named_by_its_number(
    size: int, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bad = data.draw(st.integers(0, size - 1))
    junk = data.draw(st.sampled_from(["{oops", "[1, 2]", '{"body": {}}', '{"custom_id": "x"}']))
    lines: list[object] = [request(f"r{i}", i) for i in range(size)]
    lines[bad] = junk
    path = jsonl(tmp_path_factory.mktemp("in") / "batch.jsonl", *lines)
    with pytest.raises(ConfigError, match=rf"batch\.jsonl:{bad + 1}: "):
        read_input(path, "/v1/echo")


def test_blank_lines_are_skipped_but_still_counted(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "in.jsonl", request("a"), "", "  ", "{bad")
    with pytest.raises(ConfigError, match=r"in\.jsonl:4: not JSON"):
        read_input(path, None)


def test_a_repeated_custom_id_names_both_lines(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "in.jsonl", request("a"), request("b"), request("a"))
    with pytest.raises(ConfigError, match=r"in\.jsonl:3: custom_id 'a' repeats line 1"):
        read_input(path, None)


def test_a_line_for_another_endpoint_is_refused(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "in.jsonl", request("a"), request("b", url="/v1/other"))
    with pytest.raises(ConfigError, match=r"in\.jsonl:2: url '/v1/other' is not .* '/v1/echo'"):
        read_input(path, None)
    with pytest.raises(ConfigError, match=r"in\.jsonl:1: url '/v1/echo' is not .* '/v1/x'"):
        read_input(path, "/v1/x")


def test_lines_without_url_take_the_endpoint_option(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "in.jsonl", {"custom_id": "a", "body": 1})
    assert read_input(path, "/v1/echo")[0] == "/v1/echo"
    with pytest.raises(ConfigError, match="--endpoint"):
        read_input(path, None)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no requests"):
        read_input(jsonl(tmp_path / "in.jsonl", ""), "/v1/echo")


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps(request("a")).encode() + b'\n{"custom_id": "\xff"}\n')
    with pytest.raises(ConfigError, match=r"in\.jsonl:2: not UTF-8"):
        read_input(path, None)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{oops", "in.jsonl:2: not JSON"),
        ("[1, 2]", "in.jsonl:2: expected a JSON object, got list"),
        ('{"body": {}}', "in.jsonl:2: custom_id must be a non-empty string, got None"),
        ('{"custom_id": 7, "body": {}}', "in.jsonl:2: custom_id must be a non-empty string"),
        ('{"custom_id": "b"}', "in.jsonl:2: request 'b' has no body"),
        ('{"custom_id": "b", "url": 3, "body": 1}', "in.jsonl:2: url must be a string"),
    ],
)
def test_a_bad_line_is_one_error_line_from_submit(line: str, says: str, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "in.jsonl", request("a"), line)
    error = one_line_error(["batch", "submit", str(path), "--endpoint", "/v1/echo",
                            "--app", "nowhere:manager"])  # fmt: skip
    assert says in error


# -- against a manager ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "batches.db"


def make_app(folder: Path, store: Path, *, delay: float = 0.0, size: int = 100) -> str:
    """Write a module serving ``/v1/echo`` into ``folder``; return its ``MODULE:manager``
    (a fresh module name each time: the CLI imports it in this process)."""
    name = f"batchapp_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(APP.format(store=str(store), delay=delay, size=size))
    return f"{name}:manager"


@pytest.fixture
def app_target(tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # --app is looked up from the current directory
    return make_app(tmp_path, store)


def invoke(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def three_requests(tmp_path: Path) -> Path:
    return jsonl(
        tmp_path / "in.jsonl",
        request("a", 1),
        {"custom_id": "b", "method": "POST", "url": "/v1/echo", "body": {"n": 2, "fail": True}},
        request("c", 3),
    )


def test_submit_work_and_read_back_three_requests_one_failing(
    app_target: str, tmp_path: Path, store: Path
) -> None:
    """The nagents usage from the command line: submit, poll, results per request."""
    batch_id = invoke(
        ["batch", "submit", str(three_requests(tmp_path)), "--endpoint", "/v1/echo",
         "--app", app_target]
    ).strip()  # fmt: skip
    assert batch_id.startswith("batch_")
    assert f"{batch_id}: pending" in invoke(["batch", "status", batch_id, "--app", app_target])

    invoke(["worker", "--app", app_target, "--burst"])

    # read back through the store alone, as another machine would
    line = invoke(["batch", "status", batch_id, "--store", str(store)])
    assert line.strip() == (
        f"{batch_id}: completed; endpoint /v1/echo; 3 requests: 2 completed, 1 failed"
    )
    out = [json.loads(x) for x in invoke(["batch", "results", batch_id, "--store", str(store)])
           .splitlines()]  # fmt: skip
    assert [x["custom_id"] for x in out] == ["a", "b", "c"]
    assert all(set(x) == {"id", "custom_id", "response", "error"} for x in out)
    assert out[0]["response"] == {"status_code": 200, "body": {"n": 1, "pid": os.getpid()}}
    assert out[0]["error"] is None
    assert out[1]["response"] is None
    assert out[1]["error"]["type"] == "ValueError"
    assert out[1]["error"]["message"] == "cannot echo 2"
    assert out[2]["response"]["body"]["n"] == 3
    assert len({x["id"] for x in out}) == 3

    written = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["batch", "results", batch_id, "-o", str(written), "--app",
                                 app_target])  # fmt: skip
    assert result.exit_code == 0
    assert "3 results" in result.stderr
    assert [json.loads(x) for x in written.read_text().splitlines()] == out

    got = json.loads(invoke(["batch", "get", batch_id, "--app", app_target]))
    assert got["status"] == "completed"
    assert got["request_counts"] == {"total": 3, "completed": 2, "failed": 1, "cancelled": 0,
                                     "expired": 0}  # fmt: skip
    assert got["created_at"] <= got["in_progress_at"] <= got["completed_at"]
    assert got["cancelled_at"] is None

    listed = invoke(["batch", "list", "--store", str(store)])
    assert listed.startswith(f"{batch_id}: completed")
    assert invoke(["batch", "wait", batch_id, "--store", str(store)]).startswith(batch_id)


def test_submit_keeps_metadata_and_json_output(app_target: str, tmp_path: Path) -> None:
    batch = json.loads(invoke(
        ["batch", "submit", str(three_requests(tmp_path)), "--app", app_target,
         "--metadata", "owner=ann", "--metadata", "run=7", "--json"]
    ))  # fmt: skip
    assert batch["status"] == "pending"
    assert batch["endpoint"] == "/v1/echo"  # from the lines' url
    assert batch["metadata"] == {"owner": "ann", "run": "7"}
    assert batch["request_counts"]["total"] == 3
    listed = json.loads(invoke(["batch", "list", "--app", app_target, "--json"]))
    assert [b["id"] for b in listed] == [batch["id"]]
    assert invoke(["batch", "list", "--app", app_target, "--status", "completed"]) == "no batches\n"


def test_cancel_a_pending_batch_then_wait_exits_1(app_target: str, tmp_path: Path) -> None:
    batch_id = invoke(["batch", "submit", str(three_requests(tmp_path)), "--app", app_target])
    batch_id = batch_id.strip()
    line = invoke(["batch", "cancel", batch_id, "--app", app_target])
    assert line.startswith(f"{batch_id}: cancelled;")
    assert "3 cancelled" in line
    result = runner.invoke(app, ["batch", "wait", batch_id, "--app", app_target])
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{batch_id}: cancelled")
    out = [json.loads(x) for x in invoke(["batch", "results", batch_id, "--app", app_target])
           .splitlines()]  # fmt: skip
    assert [x["error"]["type"] for x in out] == ["cancelled"] * 3


def test_wait_gives_up_after_its_timeout_with_exit_1(app_target: str, tmp_path: Path) -> None:
    batch_id = invoke(["batch", "submit", str(three_requests(tmp_path)), "--app", app_target])
    result = runner.invoke(
        app, ["batch", "wait", batch_id.strip(), "--app", app_target, "--timeout", "0"]
    )
    assert result.exit_code == 1
    assert "has not ended after 0.0 s" in result.stderr


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ([request("a"), {"custom_id": "b", "url": "/v1/echo", "body": "x" * 300}],
         "the body of request 'b' is 302 bytes as JSON, over the limit of 200"),
        ([request(f"r{i}") for i in range(501)], "more than 500 requests"),
        ([request("a", url="/v1/nope")], "no handler serves endpoint '/v1/nope'"),
    ],
)  # fmt: skip
def test_what_the_manager_refuses_is_one_line_and_nothing_is_stored(
    lines: list[object], says: str, app_target: str, tmp_path: Path
) -> None:
    path = jsonl(tmp_path / "in.jsonl", *lines)
    assert says in one_line_error(["batch", "submit", str(path), "--app", app_target])
    assert invoke(["batch", "list", "--app", app_target]) == "no batches\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["batch", "status", "batch_nope"], "no managed batch 'batch_nope'"),
        (["batch", "results", "batch_nope"], "no managed batch 'batch_nope'"),
        (["batch", "cancel", "batch_nope"], "no managed batch 'batch_nope'"),
        (["batch", "list", "--status", "sleeping"], "status must be one of"),
    ],
)
def test_an_unknown_batch_or_status_is_one_line(
    args: list[str], says: str, app_target: str
) -> None:
    assert says in one_line_error([*args, "--app", app_target])


def test_a_bad_app_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notmanager.py").write_text("manager = 42\n")
    assert "expects MODULE:ATTR" in one_line_error(["batch", "list", "--app", "nocolon"])
    assert "cannot import 'nowhere_xyz'" in one_line_error(
        ["batch", "list", "--app", "nowhere_xyz:manager"]
    )
    assert "has no attribute 'other'" in one_line_error(
        ["batch", "list", "--app", "notmanager:other"]
    )
    line = one_line_error(["worker", "--app", "notmanager:manager"])
    assert "is not a freight.BatchManager (got int)" in line
    (tmp_path / "idle_app.py").write_text(
        f"from freight.manager import BatchManager\nmanager = BatchManager({str(tmp_path)!r})\n"
    )
    assert "registers no endpoint" in one_line_error(["worker", "--app", "idle_app:manager"])


def test_an_app_may_be_a_function_returning_the_manager(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "factory_app.py").write_text(
        "from freight.manager import BatchManager\n"
        f"def make():\n    return BatchManager({str(store)!r})\n"
    )
    assert invoke(["batch", "list", "--app", "factory_app:make"]) == "no batches\n"


def test_a_missing_input_file_is_one_line(app_target: str, tmp_path: Path) -> None:
    line = one_line_error(["batch", "submit", str(tmp_path / "nope.jsonl"), "--app", app_target])
    assert "No such file or directory" in line
    assert "nope.jsonl" in line


def test_submit_needs_the_app_that_serves_the_endpoint(tmp_path: Path, store: Path) -> None:
    path = three_requests(tmp_path)
    assert "needs --app MODULE:MANAGER" in one_line_error(["batch", "submit", str(path)])


def test_reading_a_store_that_is_not_there_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere.db"
    assert f"no store at {missing}" in one_line_error(["batch", "list", "--store", str(missing)])
    line = one_line_error(["batch", "status", "batch_x", "--store", f"sqlite:///{missing}"])
    assert f"no store at {missing}" in line
    assert "no store at .freight/freight.db" in one_line_error(["batch", "list"])
    assert list(tmp_path.iterdir()) == []


def test_without_options_the_default_store_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manager built with no store keeps .freight/freight.db; the commands find it."""
    monkeypatch.chdir(tmp_path)
    manager = BatchManager()
    manager.register("/v1/echo", lambda bodies: bodies)
    batch = manager.submit_sync([{"custom_id": "a", "body": 1}], endpoint="/v1/echo")
    manager.close()
    assert invoke(["batch", "list"]).startswith(f"{batch.id}: pending;")
    assert "1 to go" in invoke(["batch", "status", batch.id])


def test_worker_runs_as_many_chunks_at_once_as_asked(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = make_app(tmp_path, store, size=10)
    lines = [request(f"r{i}", i) for i in range(95)]
    batch_id = invoke(["batch", "submit", str(jsonl(tmp_path / "in.jsonl", *lines)),
                       "--app", target]).strip()  # fmt: skip
    invoke(["worker", "--app", target, "--burst", "--workers", "3"])
    assert "95 requests: 95 completed, 0 failed" in invoke(["batch", "status", batch_id,
                                                            "--app", target])  # fmt: skip


def test_sigterm_in_process_drains_the_chunk_in_flight_then_the_command_exits_0(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler's first call sends SIGTERM to its own process: that call's chunk is
    finished and written, no other chunk starts, ``freight worker`` returns 0."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "term_app.py").write_text(
        "import os, signal\n"
        "from freight import BatchSpec\n"
        "from freight.manager import BatchManager\n"
        f"manager = BatchManager({str(store)!r}, poll_interval=0.05)\n"
        "def handler(bodies):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return bodies\n"
        "manager.register('/v1/echo', handler, spec=BatchSpec(size=10))\n"
    )
    lines = [request(f"r{i}", i) for i in range(50)]
    batch_id = invoke(["batch", "submit", str(jsonl(tmp_path / "in.jsonl", *lines)),
                       "--app", "term_app:manager"]).strip()  # fmt: skip
    result = runner.invoke(app, ["worker", "--app", "term_app:manager"])
    assert result.exit_code == 0, result.output
    status = invoke(["batch", "status", batch_id, "--store", str(store)])
    assert "50 requests: 10 completed, 0 failed, 40 to go" in status


@settings(max_examples=15, deadline=None)
@given(
    outcomes=st.lists(st.booleans(), min_size=1, max_size=40),
    size=st.integers(1, 7),
)
def test_results_have_one_line_per_request_in_order_with_its_own_outcome(
    outcomes: list[bool], size: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever fails and however requests are grouped into handler calls."""
    folder = tmp_path_factory.mktemp("batch")
    manager = BatchManager(folder / "b.db")
    manager.register(
        "/v1/echo",
        lambda bodies: [ValueError(f"no {b['n']}") if b["fail"] else b["n"] for b in bodies],
        spec=BatchSpec(size=size),
    )
    requests = [{"custom_id": f"q{i}", "body": {"n": i, "fail": not ok}}
                for i, ok in enumerate(outcomes)]  # fmt: skip
    batch = manager.submit_sync(requests, endpoint="/v1/echo")
    manager.run_sync(burst=True)
    manager.close()
    out = invoke(["batch", "results", batch.id, "--store", str(folder / "b.db")])
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["custom_id"] for x in lines] == [f"q{i}" for i in range(len(outcomes))]
    for i, (ok, line) in enumerate(zip(outcomes, lines, strict=True)):
        if ok:
            assert line["response"] == {"status_code": 200, "body": i}
            assert line["error"] is None
        else:
            assert line["response"] is None
            assert line["error"]["message"] == f"no {i}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    import psycopg
    from psycopg import sql

    schema = f"freight_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.service
def test_the_commands_on_a_postgresql_store(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = f"pgapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP.format(store=postgres_url, delay=0, size=2))
    target = f"{name}:manager"
    batch_id = invoke(["batch", "submit", str(three_requests(tmp_path)), "--app", target])
    batch_id = batch_id.strip()
    invoke(["worker", "--app", target, "--burst"])
    line = invoke(["batch", "status", batch_id, "--store", postgres_url])
    assert line.strip().endswith("3 requests: 2 completed, 1 failed")
    out = [json.loads(x) for x in invoke(["batch", "results", batch_id, "--store", postgres_url])
           .splitlines()]  # fmt: skip
    assert [(x["custom_id"], x["error"] is None) for x in out] == [
        ("a", True), ("b", False), ("c", True)
    ]  # fmt: skip
    assert invoke(["batch", "list", "--store", postgres_url]).startswith(f"{batch_id}: completed")


# -- worker processes -----------------------------------------------------------------------------


def start_worker(folder: Path, target: str) -> subprocess.Popen[bytes]:
    """``freight worker --app TARGET`` in its own process; its log goes to worker-PID.log."""
    log = folder / f"worker-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "freight.cli", "worker", "--app", target],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
    process.log = log  # type: ignore[attr-defined]
    return process


def log_of(process: subprocess.Popen[bytes]) -> str:
    return process.log.read_text()  # type: ignore[attr-defined,no-any-return]


def finished(manager: BatchManager, batch_id: str) -> int:
    return manager.get_sync(batch_id).request_counts.finished


def wait_for(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_the_worker_which_exits_0(
    signum: signal.Signals, tmp_path: Path, store: Path
) -> None:
    """The chunk in flight at the signal is written; nothing more is claimed; exit 0."""
    target = make_app(tmp_path, store, delay=0.3, size=10)
    manager = BatchManager(store)
    manager.register("/v1/echo", lambda bodies: bodies)  # to submit; the worker serves it
    batch = manager.submit_sync(
        [{"custom_id": f"r{i}", "body": {"n": i}} for i in range(200)], endpoint="/v1/echo"
    )
    worker = start_worker(tmp_path, target)
    try:
        wait_for(lambda: finished(manager, batch.id) >= 10, "a first chunk")
        worker.send_signal(signum)
        worker.wait(timeout=15)
    finally:
        worker.kill()
        worker.wait()
    err = log_of(worker)
    assert worker.returncode == 0, err
    assert "draining" in err
    done = finished(manager, batch.id)
    counts = manager.get_sync(batch.id).request_counts
    assert done % 10 == 0  # whole chunks: the one in flight was written, not dropped
    assert 10 <= done < 200
    assert counts.completed == done
    manager.close()


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_loses_nothing(tmp_path: Path, store: Path) -> None:
    """Its claims go back to the queue; the next worker does them; one result each."""
    target = make_app(tmp_path, store, delay=0.2, size=10)
    manager = BatchManager(store)
    manager.register("/v1/echo", lambda bodies: bodies)
    batch = manager.submit_sync(
        [{"custom_id": f"r{i}", "body": {"n": i}} for i in range(100)], endpoint="/v1/echo"
    )
    first = start_worker(tmp_path, target)
    try:
        wait_for(lambda: finished(manager, batch.id) >= 20, "some results")
    finally:
        first.kill()
        first.wait()
    assert finished(manager, batch.id) < 100
    second = start_worker(tmp_path, target)
    try:
        done = manager.wait_sync(batch.id, timeout=30)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=15)
    assert done.status == "completed"
    assert done.request_counts.completed == 100
    results = manager.get_results_sync(batch.id)
    assert [r.id for r in results] == [f"r{i}" for i in range(100)]
    assert [r.response["n"] for r in results] == list(range(100))
    pids = {r.response["pid"] for r in results}
    assert pids == {first.pid, second.pid}
    assert second.returncode == 0, log_of(second)
    manager.close()


@pytest.mark.parametrize(
    "command",
    [["batch", c] for c in ("submit", "status", "get", "cancel", "wait", "results", "list")]
    + [["worker"]],
)
def test_help_has_an_example_for_every_command(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert f"Example: freight {' '.join(command)}" in result.stdout
