"""Module-level functions for executor="processes" tests (they must be picklable)."""

from __future__ import annotations

import os


def square(item: dict[str, int]) -> dict[str, int]:
    if item["id"] == 13:
        raise ValueError("thirteen is refused")
    return {"id": item["id"], "square": item["id"] ** 2, "pid": os.getpid()}
