"""The demos that `make demo` runs, and every flow example, keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import POSTGRES_URL, require

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "bulk_demo.py": "",
    "stream_demo.py": "",
    "flow_payments.py": "22 items, reason close",
    "flow_sentiment.py": "34 reviews scored",
    "flow_rate_limited.py": "200 lookups in 20 requests",
    "flow_iot.py": "south: 5 devices",
    "flow_db_insert.py": ": 1999\ndead letter: page view 1234:",
    "managed_batch.py": "completed; 3 requests: 2 completed, 1 failed\n  doc-1: {'summary'",
    "redis_stream.py": "999 acknowledged\n999 readings stored\ndead letter: "
    '{"sensor": "s7", "n": 517} (KeyError: \'celsius\')',
}


def test_every_flow_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script: str, tmp_path: Path) -> None:
    args = []
    if script == "flow_db_insert.py":
        require("127.0.0.1", 5432, "PostgreSQL")
        args = [POSTGRES_URL]
    if script == "redis_stream.py":
        require("127.0.0.1", 6379, "Redis")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()
    assert EXPECTED[script] in result.stdout
