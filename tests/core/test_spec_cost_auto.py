"""BatchSpec's cost, adaptive size and replace(): checked at construction, value semantics."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from freight import BatchSpec, ConfigError


def padded(items: list[str]) -> int:
    return max(map(len, items)) * len(items)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"size": 4, "max_cost": 0, "cost": padded},
            "BatchSpec.max_cost must be a finite number > 0, got 0",
        ),
        ({"size": 4, "max_cost": math.inf, "cost": padded}, "BatchSpec.max_cost must be a finite"),
        ({"size": 4, "max_cost": "9", "cost": padded}, "BatchSpec.max_cost must be a finite"),
        ({"size": 4, "max_cost": True, "cost": padded}, "BatchSpec.max_cost must be a finite"),
        ({"size": 4, "max_cost": 9, "cost": 3}, "BatchSpec.cost must be callable"),
        ({"size": 4, "max_cost": 9}, "max_cost and BatchSpec.cost go together"),
        ({"size": 4, "cost": padded}, "max_cost and BatchSpec.cost go together"),
        ({"size": "auto"}, "pass latency_target=<seconds>"),
        ({"size": "big"}, "BatchSpec.size must be an int >= 1 or 'auto', got 'big'"),
        ({"size": "auto", "latency_target": 0}, "BatchSpec.latency_target must be > 0 seconds"),
        ({"size": "auto", "latency_target": 1, "max_size": 0}, "BatchSpec.max_size must be >= 1"),
        ({"size": 8, "latency_target": 0.05}, "latency_target only applies to size='auto'"),
        ({"size": 8, "max_size": 64}, "max_size only applies to size='auto'"),
    ],
)
def test_bad_cost_or_auto_spec_names_parameter_value_and_rule(
    kwargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        BatchSpec(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_a_cost_spec_keeps_its_figures_and_shows_them() -> None:
    spec = BatchSpec(64, 0.01, max_cost=4096.5, cost=padded)
    assert (spec.max_cost, spec.cost) == (4096.5, padded)
    assert repr(spec) == f"BatchSpec(size=64, timeout=0.01, max_cost=4096.5, cost={padded!r})"
    assert spec == BatchSpec(64, 0.01, max_cost=4096.5, cost=padded)
    assert spec != BatchSpec(64, 0.01, max_cost=4096, cost=padded)
    assert not spec.auto
    assert spec.max_size is None


def test_an_auto_spec_caps_its_size_and_takes_durations_as_timedelta() -> None:
    spec = BatchSpec("auto", latency_target=timedelta(milliseconds=50))
    assert spec.auto
    assert spec.latency_target == 0.05
    assert spec.size == spec.max_size == 1024  # the tuner's cap
    assert repr(spec) == "BatchSpec(size='auto', latency_target=0.05)"
    capped = BatchSpec(size="auto", latency_target=0.05, max_size=256, timeout=0.02)
    assert capped.size == 256
    assert capped.timeout == 0.02
    assert repr(capped) == "BatchSpec(size='auto', latency_target=0.05, max_size=256, timeout=0.02)"
    assert capped != spec
    assert BatchSpec("auto", latency_target=0.05) == spec


def test_replace_changes_what_is_given_and_drops_what_a_removed_limit_needed() -> None:
    spec = BatchSpec(8, 1.0, max_bytes=100, sizer=len, max_cost=10, cost=padded)
    assert spec.replace(size=3) == BatchSpec(
        3, 1.0, max_bytes=100, sizer=len, max_cost=10, cost=padded
    )
    assert spec.replace(max_bytes=None, max_cost=None, timeout=None) == BatchSpec(8)
    auto = spec.replace(size="auto", latency_target=0.1)
    assert auto.auto
    assert auto.size == 1024
    assert auto.max_cost == 10
    # A fixed size takes the size back from the tuner: its target and cap go with it
    assert auto.replace(size=16) == BatchSpec(
        16, 1.0, max_bytes=100, sizer=len, max_cost=10, cost=padded
    )
    assert auto.replace(max_size=32).size == 32
    with pytest.raises(ConfigError, match=r"BatchSpec\.size must be >= 1"):
        spec.replace(size=0)
    with pytest.raises(ConfigError, match="latency_target only applies"):
        spec.replace(latency_target=0.5)
