"""A setting of the wrong type is a ``ConfigTypeError`` (a ``TypeError``), as in Ray.

Ray's ``@serve.batch`` raises ``TypeError`` for ``max_batch_size=1.1`` and
``batch_wait_timeout_s="a"`` and ``ValueError`` for a negative or zero value; freight's
``ConfigTypeError`` derives from both ``ConfigError`` (a ``ValueError``) and
``TypeError``, so either ``except`` catches it, and a wrong *value* stays a plain
``ConfigError``. An item no batch can fit is Ray's ``RuntimeError``: ``ItemTooLarge``
is one too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import freight
from freight import BatchBuffer, BatchSpec, ConfigError, ConfigTypeError, ItemTooLarge
from freight._core._time import to_positive_int, to_seconds


def test_config_type_error_is_a_config_error_and_a_type_error() -> None:
    assert issubclass(ConfigTypeError, ConfigError)
    assert issubclass(ConfigTypeError, TypeError)
    assert issubclass(ConfigTypeError, ValueError)
    assert freight.ConfigTypeError is ConfigTypeError


@pytest.mark.parametrize(
    "value", [1.1, "3", None, True, [2], 2.5], ids=["float", "str", "None", "bool", "list", "half"]
)
def test_a_count_of_the_wrong_type_is_a_config_type_error(value: object) -> None:
    with pytest.raises(ConfigTypeError, match=r"size must be an int >= 1"):
        to_positive_int(value, "BatchSpec.size")


@pytest.mark.parametrize("value", [0, -3])
def test_a_count_out_of_range_is_a_plain_config_error(value: int) -> None:
    with pytest.raises(ConfigError, match=r"BatchSpec.size must be >= 1") as info:
        to_positive_int(value, "BatchSpec.size")
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize("value", ["a", None, True, [1], b"1"])
def test_seconds_of_the_wrong_type_are_a_config_type_error(value: object) -> None:
    with pytest.raises(ConfigTypeError, match="timeout must be a number of seconds"):
        to_seconds(value, "timeout")


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_seconds_out_of_range_are_a_plain_config_error(value: float) -> None:
    with pytest.raises(ConfigError) as info:
        to_seconds(value, "timeout")
    assert not isinstance(info.value, TypeError)


def test_zero_seconds_where_refused_is_a_plain_config_error() -> None:
    with pytest.raises(ConfigError, match="> 0 seconds") as info:
        to_seconds(timedelta(0), "latency_target", allow_zero=False)
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 1.1}, "BatchSpec.size must be an int >= 1 or 'auto'"),
        ({"size": "big"}, "BatchSpec.size must be an int >= 1 or 'auto'"),
        ({"size": 2, "timeout": "a"}, "BatchSpec.timeout must be a number of seconds"),
        ({"size": 2, "max_bytes": 1.5}, "BatchSpec.max_bytes must be an int"),
        ({"size": "auto", "latency_target": "1"}, "latency_target must be a number of seconds"),
        ({"size": "auto", "latency_target": 1, "max_size": 8.5}, "max_size must be an int"),
        ({"size": 2, "max_cost": "9", "cost": len}, "BatchSpec.max_cost must be a finite number"),
        ({"size": 2, "max_bytes": 9, "sizer": 3}, "BatchSpec.sizer must be callable"),
        ({"size": 2, "max_cost": 9, "cost": 3}, "BatchSpec.cost must be callable"),
    ],
)
def test_batchspec_refuses_a_wrong_type_with_a_config_type_error(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigTypeError, match=match):
        BatchSpec(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 0},
        {"size": 2, "timeout": -1},
        {"size": 2, "max_bytes": 0},
        {"size": 2, "max_cost": -1.0, "cost": len},
        {"size": 2, "max_cost": float("nan"), "cost": len},
        {"size": "auto", "latency_target": 0},
    ],
)
def test_batchspec_refuses_a_wrong_value_with_a_plain_config_error(
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError) as info:
        BatchSpec(**kwargs)
    assert not isinstance(info.value, TypeError)


def test_ray_types_at_decoration() -> None:
    # Ray: TypeError for max_batch_size=1.1 and batch_wait_timeout_s="a", ValueError for 0
    with pytest.raises(TypeError, match="size must be an int"):
        freight.batched(size=1.1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        freight.batched(timeout="a")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="size must be >= 1"):
        freight.batched(size=0)
    freight.batched(size=1.0)  # type: ignore[call-overload]  # a whole float is taken, as in Ray


def test_an_item_no_batch_can_fit_is_also_a_runtime_error() -> None:
    assert issubclass(ItemTooLarge, RuntimeError)
    assert issubclass(ItemTooLarge, ValueError)
    assert issubclass(ItemTooLarge, freight.FreightError)
    buf: BatchBuffer[str] = BatchBuffer(
        BatchSpec(size=4, max_cost=3, cost=lambda items: sum(map(len, items)))
    )
    assert buf.add("x", 0) == []
    with pytest.raises(RuntimeError, match=r"costs 5 alone, over max_cost=3"):
        buf.add("abcde", 0)
    assert [f.items for f in buf.flush()] == [["x"]]
