"""The batcher options: one declaration, shared by Batcher, ThreadBatcher and @batched."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from freight import Batcher, BatchSpec, ConfigError, ThreadBatcher, batched
from freight._drivers._options import BatcherKwargs, BatcherOptions


def test_the_typed_kwargs_and_the_options_record_name_the_same_options() -> None:
    assert set(BatcherKwargs.__annotations__) == {f.name for f in fields(BatcherOptions)}


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: Batcher(lambda xs: xs, BatchSpec(2), **kw),
        lambda **kw: ThreadBatcher(lambda xs: xs, BatchSpec(2), **kw),
        lambda **kw: batched(2, **kw),
    ],
)
def test_an_unknown_option_is_refused_by_name_everywhere(make: Any) -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) max_inflight; the options are"):
        make(max_inflight=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_pending": 0}, "max_pending"),
        ({"overflow": "drop"}, "overflow must be 'block' or 'reject'"),
        ({"ordered": "yes"}, "ordered must be True or False"),
        ({"retry": 3}, "retry must be a freight.Retry"),
        ({"rate_limit": "fast"}, "rate_limit must be a freight.RateLimiter"),
        ({"clock": object()}, "Clock protocol"),
        ({"name": 5}, "name must be a string"),
        ({"subscribers": [5]}, "a subscriber must be callable"),
        ({"key": 5}, "key must be a function"),
        ({"max_concurrent_batches": 0}, "max_concurrent_batches"),
    ],
)
def test_bad_options_are_refused_at_decoration_with_the_rule(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        batched(2, **options)


def test_a_spec_that_is_not_a_batchspec_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"spec must be a freight\.BatchSpec"):
        Batcher(lambda xs: xs, 10)  # type: ignore[arg-type]


def test_batched_keeps_subscribers_given_as_an_iterator() -> None:
    events: list[Any] = []

    @batched(1, timeout=None, subscribers=iter([events.append]))
    def double(items: list[int]) -> list[int]:
        return [i * 2 for i in items]

    assert double(2) == 4
    double.close()
    assert len(events) == 1
