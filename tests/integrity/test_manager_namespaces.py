"""Managed-batch workers with one host name in two PID namespaces (containers with
``network_mode: host``, Kubernetes pods with ``hostNetwork``): a worker takes back the
claims of a dead neighbour by checking its pid, which only means something in the
namespace that gave it. A live worker's claim must not be taken back because its pid
names no process in another namespace (both workers would redo each other's chunks,
every handler call twice, and none might ever finish a slow one).

Real processes in their own namespaces (``unshare``, root only): marked ``slow``,
skipped where namespaces cannot be made.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from freight import BatchManager, BatchRequest

pytestmark = pytest.mark.slow

HOLDER = """
import sys, threading
from freight import BatchManager, BatchSpec

manager = BatchManager(store=sys.argv[1], lease=60)


def hold(bodies):
    print("started", flush=True)  # the test reads it on its pipe
    threading.Event().wait()  # alive, holding its claimed chunk, until the test kills it
    return bodies


manager.register("/x", hold, spec=BatchSpec(size=5))
manager.run_sync()
"""

NEIGHBOUR = """
import sys
from freight import BatchManager, BatchSpec

manager = BatchManager(store=sys.argv[1], lease=60)
manager.register("/x", lambda bodies: bodies, spec=BatchSpec(size=5))
manager.run_sync(burst=True)
"""


def namespaces_can_be_made() -> bool:
    if shutil.which("unshare") is None:
        return False
    made = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "/bin/true"],
        capture_output=True,
        check=False,
    )
    return made.returncode == 0


def in_namespace(
    script: Path, *args: str, extra: int, stdout: int | None = None
) -> subprocess.Popen[bytes]:
    """``script`` in a new PID namespace, after ``extra`` short-lived processes (so the
    two workers have different pids, each naming no live process in the other's)."""
    first = "/bin/true; " * extra
    command = first + shlex.join([sys.executable, str(script), *args])
    return subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "/bin/sh", "-c", command],
        start_new_session=True,
        stdout=stdout,
    )


def holding(script: Path, db: Path) -> subprocess.Popen[bytes]:
    """``script`` (a holder: it prints ``started`` once it holds its chunk, then waits
    to be killed) in a new PID namespace, returned once it holds it: its line is read
    on a pipe, no polling (a holder that dies first ends the pipe: a clear failure)."""
    held = in_namespace(script, str(db), extra=1, stdout=subprocess.PIPE)
    assert held.stdout is not None
    line = held.stdout.readline()
    if line.strip() != b"started":
        kill(held)
        raise AssertionError(f"the holder never started its chunk (it wrote {line!r})")
    return held


def kill(held: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``held`` (and its namespace's processes), and close its pipe."""
    os.killpg(held.pid, signal.SIGKILL)
    held.wait()
    if held.stdout is not None:
        held.stdout.close()


def test_a_live_worker_s_claim_is_not_taken_back_from_another_pid_namespace(
    tmp_path: Path,
) -> None:
    if not namespaces_can_be_made():
        pytest.skip("cannot make PID namespaces here (unshare needs root)")
    db = tmp_path / "freight.db"
    holder, neighbour = tmp_path / "holder.py", tmp_path / "neighbour.py"
    holder.write_text(HOLDER)
    neighbour.write_text(NEIGHBOUR)
    manager = BatchManager(store=db)
    manager.register("/x", lambda bodies: bodies)
    job = manager.submit_sync([BatchRequest(id=f"r{i}", body=i) for i in range(5)], endpoint="/x")
    held = holding(holder, db)
    try:
        other = in_namespace(neighbour, str(db), extra=3)
        assert other.wait(timeout=30) == 0
        with sqlite3.connect(db) as conn:
            states = conn.execute("SELECT DISTINCT state FROM manager_requests").fetchall()
            [(claims,)] = conn.execute("SELECT count(*) FROM manager_claims").fetchall()
        assert (states, claims) == ([("claimed",)], 1)  # still the holder's, untouched
        assert manager.get_sync(job.id).request_counts.completed == 0
    finally:
        kill(held)
        manager.close()
