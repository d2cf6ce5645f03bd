"""Rules that coverage did not see while its ``...`` exclusion hid every function whose
signature holds an ellipsis (``Callable[..., Any]``, ``tuple[type, ...]``).

Each test states the rule: a wrong flow declaration is refused when it is made, with a
message that names the consumer, the value and the fix; ``@batched`` keeps a given name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from freight import BatchSpec, ConfigError, Flow, JoinSpec, RateLimiter, batched
from freight.testing import FakeClock


@dataclass
class Order:
    id: int


@dataclass
class Payment:
    order_id: int


@pytest.fixture
def flow() -> Flow:
    return Flow(trace=False)


def test_does_refuses_a_handler_that_cannot_be_called(flow: Flow) -> None:
    builder = flow.consumer("audit").consumes(Order)
    with pytest.raises(ConfigError, match=r"consumer 'audit': does\(\) needs a callable"):
        builder.does("not a function")  # type: ignore[arg-type]
    assert flow.consumers == []  # nothing registered


def test_on_partial_applies_to_joins_only(flow: Flow) -> None:
    with pytest.raises(ConfigError, match="consumer 'audit': consumes\\(\\): on_partial applies"):
        flow.consumer("audit").consumes(Order, on_partial="emit")


def test_on_partial_is_dead_letter_or_emit(flow: Flow) -> None:
    join = JoinSpec(lambda a: a.id if isinstance(a, Order) else a.order_id, within=1)
    with pytest.raises(ConfigError, match="on_partial must be 'dead_letter' or 'emit'"):
        flow.consumer("match").consumes(Order, Payment, join=join, on_partial="drop")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("batch", 10, "batch must be a freight.BatchSpec, got 10"),
        ("retry", 3, "retry must be a freight.Retry, got 3"),
        ("rate_limit", "5/s", "rate_limit must be a RateLimiter or a number"),
        ("rate_limit", True, "rate_limit must be a RateLimiter or a number"),
    ],
)
def test_options_of_the_wrong_kind_are_refused_with_the_kind_expected(
    flow: Flow, option: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"consumer 'audit': consumes\\(\\): {message}"):
        flow.consumer("audit").consumes(Order, **{option: value})  # type: ignore[arg-type]


def test_where_must_be_a_predicate(flow: Flow) -> None:
    with pytest.raises(ConfigError, match=r"where must be a callable \(artifact -> bool\)"):
        flow.consumer("audit").consumes(Order, where="id > 3")  # type: ignore[arg-type]


def test_a_join_must_be_a_join_spec(flow: Flow) -> None:
    with pytest.raises(ConfigError, match=r"join must be a freight\.JoinSpec, got 'id'"):
        flow.consumer("match").consumes(Order, Payment, join="id")  # type: ignore[arg-type]


def test_a_number_as_rate_limit_becomes_a_rate_limiter(flow: Flow) -> None:
    builder = flow.consumer("audit").consumes(Order, batch=BatchSpec(10), rate_limit=5)
    assert isinstance(builder.spec.rate_limit, RateLimiter)
    limiter = RateLimiter(2)
    assert flow.consumer("other").consumes(Order, rate_limit=limiter).spec.rate_limit is limiter


def test_a_flow_store_must_be_a_freight_store() -> None:
    with pytest.raises(ConfigError, match=r"Flow\(store=\.\.\.\) needs a freight store"):
        Flow(store=object(), trace=False)


def test_batched_keeps_the_name_it_is_given_and_defaults_to_the_function_name() -> None:
    @batched(2, name="embedder")
    def named(items: list[int]) -> list[int]:
        return items

    @batched(2)
    def anonymous(items: list[int]) -> list[int]:
        return items

    try:
        assert named(1) == 1
        assert named.batcher().name == "embedder"
        assert anonymous.batcher().name.endswith("anonymous")
    finally:
        named.close()
        anonymous.close()


async def test_a_fake_clock_refuses_to_go_back_with_a_config_error() -> None:
    clock = FakeClock()
    with pytest.raises(ConfigError, match=r"got advance\(-1\): pass seconds >= 0"):
        await clock.advance(-1)
    assert clock.now() == 0
