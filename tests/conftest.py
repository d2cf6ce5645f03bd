"""Shared fixtures."""

from __future__ import annotations

import pytest

from freight.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
