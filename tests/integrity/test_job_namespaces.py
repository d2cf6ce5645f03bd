"""Bulk-job runners with one host name in two PID namespaces (containers with
``network_mode: host``, pods with ``hostNetwork``): a runner takes over a run whose owner
is "on this host" and whose pid names no live process. A pid means something only in the
namespace that gave it, so a live owner in another namespace must not be taken over (the
job would run twice at once). Found in the review of managed batches, which had the same
flaw.

Real processes in their own namespaces (``unshare``, root only): marked ``slow``,
skipped where namespaces cannot be made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integrity.test_manager_namespaces import (
    holding,
    in_namespace,
    kill,
    namespaces_can_be_made,
)

pytestmark = pytest.mark.slow

HOLDER = """
import sys, threading
from freight.jobs import Job
from freight.store import open_store


def hold(items):
    print("started", flush=True)  # the test reads it on its pipe
    threading.Event().wait()  # alive, owning its run, until the test kills it


Job("ns-job", list(range(10)), hold, chunk_size=10, store=open_store(sys.argv[1])).run()
"""

SECOND = """
import sys
from freight.jobs import Job, JobAlreadyRunning
from freight.store import open_store

try:
    Job("ns-job", list(range(10)), lambda items: None, chunk_size=10,
        store=open_store(sys.argv[1])).run()
except JobAlreadyRunning as refused:
    print(refused)
    raise SystemExit(3)
"""


def test_a_live_run_is_not_taken_over_from_another_pid_namespace(tmp_path: Path) -> None:
    if not namespaces_can_be_made():
        pytest.skip("cannot make PID namespaces here (unshare needs root)")
    db = tmp_path / "freight.db"
    holder, second = tmp_path / "holder.py", tmp_path / "second.py"
    holder.write_text(HOLDER)
    second.write_text(SECOND)
    held = holding(holder, db)
    try:
        other = in_namespace(second, str(db), extra=3)
        assert other.wait(timeout=30) == 3  # refused: the run's owner is alive
    finally:
        kill(held)
