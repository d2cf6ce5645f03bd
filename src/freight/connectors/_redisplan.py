"""How a batch of Redis write commands becomes one pipeline, and replies become outcomes.

Pure (no client, no I/O), shared by the sync and the async sink:

- An item is one command as a tuple, its name first: ``("SET", "k", "v")``,
  ``("HSET", "h", {"f": "v"})``, ``("XADD", "s", {"f": "v"})``, ``("LPUSH", "l", 1, 2)``,
  ``("ZADD", "z", {"member": 1.5})``. A mapping argument is spread into its pairs
  (``ZADD``'s as score, member; ``XADD`` gets the ``*`` id when none is given).
- A run of plain ``("SET", key, value)`` items (no options, no ``ttl``) becomes one
  ``MSET`` (at most :data:`MSET_CHUNK` keys): one command for Redis to parse instead of
  one per key, the reason ``MSET`` of 1,000 runs ~4x a pipeline of 1,000 ``SET``.
  ``MSET`` cannot fail key by key, so its one reply is each of its items' outcome.
- With ``ttl``, a ``SET`` carries ``PX`` itself; any other command is followed by a
  ``PEXPIRE`` of its key (an item then fails if either reply is an error).

:func:`outcomes` maps the pipeline's replies (an exception instance in place of a
failed command, as ``execute(raise_on_error=False)`` gives them) back to one outcome
per item: the command's reply, or the error for that item alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from freight._errors import ConfigError

__all__ = ["MSET_CHUNK", "Planned", "outcomes", "plan"]

MSET_CHUNK = 1000
"""Most keys in one ``MSET``: larger ones gain nothing and hold the server longer."""


@dataclass(slots=True)
class Planned:
    """The pipeline for a batch: its commands, and per item the commands it owns."""

    commands: list[tuple[Any, ...]]
    owners: list[tuple[int, int]]  # per item: (first command, how many)


def _refuse(item: object, index: int) -> ConfigError:
    return ConfigError(
        f"RedisSink item {index} is {item!r}; each item must be one command as a tuple, "
        "its name first: ('SET', key, value), ('HSET', key, {field: value}), "
        "('XADD', stream, {field: value}), ('LPUSH', key, value, ...), "
        "('ZADD', key, {member: score})"
    )


def _spread(name: str, args: Sequence[Any]) -> tuple[Any, ...]:
    """``(NAME, *args)`` with mapping arguments spread into their pairs."""
    if not any(isinstance(a, Mapping) for a in args):
        return (name, *args)
    out: list[Any] = [name]
    for i, arg in enumerate(args):
        if not isinstance(arg, Mapping):
            out.append(arg)
            continue
        if name == "XADD" and i == 1:
            out.append("*")  # XADD key {fields}: the server picks the id
        for k, v in arg.items():
            out.extend((v, k) if name == "ZADD" else (k, v))
    return tuple(out)


def _plain_set(item: Sequence[Any]) -> bool:
    return len(item) == 3 and isinstance(item[0], str) and item[0].upper() == "SET"


def plan(items: Sequence[Any], ttl_ms: int | None) -> Planned:
    """The pipeline for ``items`` (see the module docstring)."""
    commands: list[tuple[Any, ...]] = []
    owners: list[tuple[int, int]] = []
    run: list[int] = []  # items of the open MSET run

    def close_run() -> None:
        if run:
            flat: list[Any] = ["MSET"]
            for j in run:
                flat += (items[j][1], items[j][2])
            for j in run:
                owners[j] = (len(commands), 1)
            commands.append(tuple(flat))
            run.clear()

    for index, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) < 2 or not isinstance(item[0], str):
            raise _refuse(item, index)
        owners.append((0, 0))
        if ttl_ms is None and _plain_set(item):
            run.append(index)
            if len(run) == MSET_CHUNK:
                close_run()
            continue
        close_run()
        name = item[0].upper()
        command = _spread(name, item[1:])
        if ttl_ms is not None and name == "SET":
            owners[index] = (len(commands), 1)
            commands.append((*command, "PX", ttl_ms))
        elif ttl_ms is not None:
            owners[index] = (len(commands), 2)
            commands += (command, ("PEXPIRE", item[1], ttl_ms))
        else:
            owners[index] = (len(commands), 1)
            commands.append(command)
    close_run()
    return Planned(commands, owners)


def outcomes(planned: Planned, replies: Sequence[Any]) -> list[Any]:
    """One outcome per item: its command's reply, or the first error among its replies."""
    result: list[Any] = []
    for first, count in planned.owners:
        mine = replies[first : first + count]
        error = next((r for r in mine if isinstance(r, BaseException)), None)
        result.append(error if error is not None else mine[0])
    return result
