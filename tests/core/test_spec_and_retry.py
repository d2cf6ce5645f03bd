"""BatchSpec and Retry: validation at construction, classification, backoff."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from freight import BatchSpec, ConfigError, PermanentError, Retry, TransientError


def test_timeout_accepts_seconds_and_timedelta() -> None:
    assert BatchSpec(10, timeout=timedelta(seconds=30)).timeout == 30.0
    assert BatchSpec(size=10, timeout=0.5).timeout == 0.5
    assert BatchSpec(10) == BatchSpec(size=10, timeout=None)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"size": 0}, "BatchSpec.size must be >= 1, got 0"),
        ({"size": 2.5}, "BatchSpec.size must be an int"),
        ({"size": True}, "BatchSpec.size must be an int"),
        ({"size": 1, "timeout": -1}, "BatchSpec.timeout must be >= 0 seconds, got -1"),
        ({"size": 1, "timeout": math.nan}, "BatchSpec.timeout must be a finite"),
        ({"size": 1, "timeout": "30s"}, "BatchSpec.timeout must be a number of seconds"),
        ({"size": 1, "max_bytes": 0}, "BatchSpec.max_bytes must be >= 1"),
        ({"size": 1, "sizer": len}, "sizer has no effect without max_bytes"),
        ({"size": 1, "max_bytes": 5, "sizer": 3}, "BatchSpec.sizer must be callable"),
    ],
)
def test_bad_spec_names_parameter_value_and_rule(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        BatchSpec(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_spec_is_immutable_and_hashable() -> None:
    spec = BatchSpec(3, timeout=1)
    with pytest.raises(AttributeError):
        spec.size = 4  # type: ignore[misc]
    assert {spec: 1}[BatchSpec(3, 1)] == 1
    assert repr(spec) == "BatchSpec(size=3, timeout=1.0)"


def test_transient_classification() -> None:
    retry = Retry(retry_on=KeyError)
    assert retry.is_transient(TransientError())
    assert retry.is_transient(TimeoutError())
    assert retry.is_transient(ConnectionResetError())
    assert retry.is_transient(KeyError())
    assert not retry.is_transient(ValueError())
    assert not retry.is_transient(PermanentError())
    predicate = Retry(retry_on=lambda e: "busy" in str(e))
    assert predicate.is_transient(RuntimeError("server busy"))
    assert not predicate.is_transient(RuntimeError("bad input"))
    assert Retry(retry_on=(KeyError, IndexError)).is_transient(IndexError())


def test_backoff_is_exponential_capped_and_jittered() -> None:
    fixed = Retry(backoff=0.5, multiplier=2, max_backoff=3, jitter=0)
    assert [fixed.delay(n, 0.99) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    full = Retry(backoff=1, jitter=1.0)
    assert full.delay(1, 0.0) == 0.0
    assert full.delay(1, 0.5) == 0.5
    half = Retry(backoff=1, jitter=0.5)
    assert half.delay(1, 0.0) == 0.5
    assert Retry(backoff=timedelta(milliseconds=200), jitter=0).delay(1, 0) == 0.2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"attempts": 0}, "Retry.attempts"),
        ({"backoff": -1}, "Retry.backoff"),
        ({"backoff": 5, "max_backoff": 1}, "Retry.max_backoff"),
        ({"multiplier": 0.5}, "Retry.multiplier"),
        ({"jitter": 2}, "Retry.jitter"),
        ({"retry_on": "KeyError"}, "Retry.retry_on"),
        ({"retry_on": (KeyError, "x")}, "Retry.retry_on"),
        ({"isolate": "yes"}, "Retry.isolate"),
    ],
)
def test_bad_retry_names_the_parameter(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Retry(**kwargs)  # type: ignore[arg-type]
