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
import time
from pathlib import Path

import pytest

from freight import BatchManager, BatchRequest

pytestmark = pytest.mark.slow

HOLDER = """
import pathlib, sys, time
from freight import BatchManager, BatchSpec

manager = BatchManager(store=sys.argv[1], lease=60)


def hold(bodies):
    pathlib.Path(sys.argv[2]).write_text("started")
    time.sleep(60)  # alive, holding its claimed chunk
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


def in_namespace(script: Path, *args: str, extra: int) -> subprocess.Popen[bytes]:
    """``script`` in a new PID namespace, after ``extra`` short-lived processes (so the
    two workers have different pids, each naming no live process in the other's)."""
    first = "/bin/true; " * extra
    command = first + shlex.join([sys.executable, str(script), *args])
    return subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "/bin/sh", "-c", command],
        start_new_session=True,
    )


def test_a_live_worker_s_claim_is_not_taken_back_from_another_pid_namespace(
    tmp_path: Path,
) -> None:
    if not namespaces_can_be_made():
        pytest.skip("cannot make PID namespaces here (unshare needs root)")
    db, started = tmp_path / "freight.db", tmp_path / "started"
    holder, neighbour = tmp_path / "holder.py", tmp_path / "neighbour.py"
    holder.write_text(HOLDER)
    neighbour.write_text(NEIGHBOUR)
    manager = BatchManager(store=db)
    manager.register("/x", lambda bodies: bodies)
    job = manager.submit_sync([BatchRequest(id=f"r{i}", body=i) for i in range(5)], endpoint="/x")
    held = in_namespace(holder, str(db), str(started), extra=1)
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists(), "the holder never started its chunk"
        other = in_namespace(neighbour, str(db), extra=3)
        assert other.wait(timeout=30) == 0
        with sqlite3.connect(db) as conn:
            states = conn.execute("SELECT DISTINCT state FROM manager_requests").fetchall()
            [(claims,)] = conn.execute("SELECT count(*) FROM manager_claims").fetchall()
        assert (states, claims) == ([("claimed",)], 1)  # still the holder's, untouched
        assert manager.get_sync(job.id).request_counts.completed == 0
    finally:
        os.killpg(held.pid, signal.SIGKILL)
        held.wait()
        manager.close()
