"""Scale-out of managed batches: three ``freight worker`` processes share one
30,000-request batch on the PostgreSQL store; one is killed with SIGKILL mid-way, while
its handler runs a chunk it claimed (it says so by creating a file on its tenth call), so
the kill always loses a claim that another worker must take back (here, on one host,
at its next sweep, seeing the process gone; across machines, once the lease lapses).

The batch still completes, with every request's result exactly once (one row per
request, each with the response its own body asked for, no claim left behind), and the
work was shared: each worker that stayed alive wrote some of the results. Who wrote a
result is recorded twice, independently: the handler puts its process id in each
response, and the store keeps the worker that wrote each row.

Real processes in real time: marked ``slow``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from freight.manager import BatchManager
from tests.services import POSTGRES_URL, require

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 30_000
WORKERS = 3

APP = """\
import os
import time

from freight import BatchSpec
from freight.manager import BatchManager

manager = BatchManager({url!r}, lease=1.5, poll_interval=0.05)
VICTIM = os.environ.get("SCALE_VICTIM")  # the worker to kill says when it is mid-chunk
calls = 0


def echo(bodies):
    global calls
    calls += 1
    if VICTIM and calls == 10:
        open(VICTIM, "w").close()
        time.sleep(60)  # killed here, holding a claimed chunk
    time.sleep(0.02)  # a handler that takes a moment, so the work is shared while it lasts
    pid = os.getpid()
    return [{{"n": body["n"], "pid": pid}} for body in bodies]


manager.register("/v1/echo", echo, spec=BatchSpec(size=250))
"""


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    import psycopg
    from psycopg import sql

    schema = f"freight_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def start_worker(folder: Path, n: int) -> subprocess.Popen[bytes]:
    """``freight worker`` number ``n``; worker 0 is the one to kill (it creates the file
    ``victim`` when its handler is in the middle of its tenth chunk, and waits there)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if n == 0:
        env["SCALE_VICTIM"] = str(folder / "victim")
    with (folder / f"worker-{n}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "freight.cli", "worker", "--app", "scaleapp:manager"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def query(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def held_by(url: str, pid: int) -> int:
    """Requests claimed (in flight) by the worker of process ``pid``."""
    rows = query(
        url,
        "SELECT count(*) FROM manager_requests r JOIN manager_claims c ON r.claim = c.token"
        " WHERE c.pid = %s AND r.state = 'claimed'",
        pid,
    )
    return int(str(rows[0][0]))


def test_three_workers_one_killed_complete_30000_requests_exactly_once(
    postgres_url: str, tmp_path: Path
) -> None:
    (tmp_path / "scaleapp.py").write_text(APP.format(url=postgres_url))
    manager = BatchManager(postgres_url, lease=1.5)
    manager.register("/v1/echo", lambda bodies: bodies)  # to submit: the workers serve it
    manager.list_sync()  # the store's tables exist before the workers start
    workers = [start_worker(tmp_path, n) for n in range(WORKERS)]
    try:
        wait_for(
            lambda: all("serving" in (tmp_path / f"worker-{n}.log").read_text()
                        for n in range(WORKERS)),
            "the workers to start", 20,
        )  # fmt: skip
        batch = manager.submit_sync(
            [{"custom_id": f"r{i}", "body": {"n": i}} for i in range(REQUESTS)],
            endpoint="/v1/echo",
        )

        def finished() -> int:
            return manager.get_sync(batch.id).request_counts.finished

        wait_for((tmp_path / "victim").exists, "worker 0 to be mid-chunk", 30)
        killed = workers[0]
        # Checked before the kill (its handler sleeps, holding the chunk): once it is
        # dead, a live worker may take the chunk back before the test looks.
        assert held_by(postgres_url, killed.pid) == 250  # a chunk it claimed, to be lost
        assert finished() < REQUESTS  # the kill lands mid-way: that chunk is not done
        killed.send_signal(signal.SIGKILL)
        killed.wait()

        done = manager.wait_sync(batch.id, timeout=30)
        live = workers[1:]
        for process in live:
            process.send_signal(signal.SIGTERM)
        for process in live:
            assert process.wait(timeout=15) == 0, (tmp_path / "worker-1.log").read_text()
    except BaseException:
        manager.close()  # its connection, closed now rather than by a later test's GC
        raise
    finally:
        for process in workers:
            process.kill()
            process.wait()

    assert done.status == "completed"
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (REQUESTS, REQUESTS, 0)

    # every request's result exactly once, the response its own body asked for
    results = manager.get_results_sync(batch.id)
    assert [r.id for r in results] == [f"r{i}" for i in range(REQUESTS)]
    assert [r.response["n"] for r in results] == list(range(REQUESTS))
    rows = query(
        postgres_url,
        "SELECT count(*), count(DISTINCT idx), count(*) FILTER (WHERE state = 'completed')"
        " FROM manager_requests WHERE batch_id = %s",
        batch.id,
    )
    assert rows == [(REQUESTS, REQUESTS, REQUESTS)]
    assert query(postgres_url, "SELECT count(*) FROM manager_claims") == [(0,)]

    # the work was shared: each live worker wrote some; both records of who agree
    by_response = Counter(r.response["pid"] for r in results)
    by_store = Counter(
        {int(str(worker).split(":")[1]): int(str(n)) for worker, n in query(
            postgres_url,
            "SELECT worker, count(*) FROM manager_requests WHERE batch_id = %s GROUP BY worker",
            batch.id,
        )}
    )  # fmt: skip
    assert by_response == by_store
    assert sum(by_response.values()) == REQUESTS
    for process in live:
        assert by_response[process.pid] > 0, by_response
    assert set(by_response) <= {p.pid for p in workers}
    assert by_response[killed.pid] == 9 * 250  # its nine chunks before the kill, kept
    manager.close()
