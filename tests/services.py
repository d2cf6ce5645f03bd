"""Real services for connector tests: skip locally when unreachable, fail under CI=true."""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get("FREIGHT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def require(host: str, port: int, what: str) -> None:
    """Skip (locally) or fail (CI=true) when ``host:port`` does not answer."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{what} is not reachable at {host}:{port} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must provide it (see .ci/run)")
        pytest.skip(message)
