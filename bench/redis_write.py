"""100k writes to Redis: freight's RedisSink against hand-written redis-py, same run.

``python bench/redis_write.py [--n 100000] [--one-by-one 20000] [--python-parser]
[--url redis://127.0.0.1:6379/0]`` (``--python-parser``: redis-py's own reply parser, not
hiredis, for every client of the run) in one run, each write path timed best of
``--repeat`` (interleaved):

  1. one-by-one ``SET`` (``--one-by-one`` keys: at ~7.5k ops/s the full 100k takes 13 s);
  2. a hand-written pipeline of 1,000 ``SET`` per ``execute()``;
  3. a hand-written ``MSET`` of 1,000 keys;
  4. ``redis-benchmark -P 1000 -q -t set -n 100000`` if the binary exists: the floor;
  5. freight ``RedisSink.write`` of plain ``("SET", key, value)`` items, batches of 1,000
     (it sends ``MSET`` by itself): target >= 0.9x the hand ``MSET``;
  6. mixed commands (``SET``/``HSET``/``LPUSH``/``ZADD``/``XADD``, cycling), batches of 1,000:
     a hand-written pipeline against ``RedisSink.write``: target >= 1.0x.

Keys are ``freight-bench:<uuid>:…``, deleted at the end. Prints ops/s and the ratios;
exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from freight.connectors.redis import RedisSink

BATCH = 1000


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def mixed(prefix: str, n: int) -> list[tuple[Any, ...]]:
    kinds: list[Callable[[int], tuple[Any, ...]]] = [
        lambda i: ("SET", f"{prefix}:s{i}", f"v{i}"),
        lambda i: ("HSET", f"{prefix}:h{i}", {"f": i}),
        lambda i: ("LPUSH", f"{prefix}:l{i % 100}", i),
        lambda i: ("ZADD", f"{prefix}:z{i % 100}", {f"m{i}": i}),
        lambda i: ("XADD", f"{prefix}:x{i % 100}", {"f": i}),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def hand_mixed(client: Any, items: list[tuple[Any, ...]]) -> None:
    for part in chunks(items):
        pipe = client.pipeline(transaction=False)
        for command in part:
            name, key, value = command
            if name == "SET":
                pipe.set(key, value)
            elif name == "HSET":
                pipe.hset(key, mapping=value)
            elif name == "LPUSH":
                pipe.lpush(key, value)
            elif name == "ZADD":
                pipe.zadd(key, value)
            else:
                pipe.xadd(key, value)
        pipe.execute()


def redis_benchmark() -> float | None:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-P", "1000", "-q", "-t", "set", "-n", "100000"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.findall(r"SET: ([\d.]+) requests per second", out)
    return float(found[-1]) if found else None


def paths(client: Any, sink: RedisSink, n: int, prefix: str) -> dict[str, Callable[[], None]]:
    """The write paths compared, each writing ``n`` keys under ``prefix``."""
    keys = [f"{prefix}:k{i}" for i in range(n)]
    values = [f"value-{i}" for i in range(n)]
    pairs = list(zip(keys, values, strict=True))
    plain = [("SET", k, v) for k, v in pairs]
    mix = mixed(prefix, n)

    def hand_pipeline() -> None:
        for part in chunks(pairs):
            pipe = client.pipeline(transaction=False)
            for k, v in part:
                pipe.set(k, v)
            pipe.execute()

    def hand_mset() -> None:
        for part in chunks(pairs):
            client.mset(dict(part))

    def sink_plain() -> None:
        for part in chunks(plain):
            sink.write(part)

    def sink_mixed() -> None:
        for part in chunks(mix):
            sink.write(part)

    return {
        "hand pipeline SET": hand_pipeline,
        "hand MSET": hand_mset,
        "freight sink plain k/v": sink_plain,
        "hand pipeline mixed": lambda: hand_mixed(client, mix),
        "freight sink mixed": sink_mixed,
    }


def report(n: int, best: dict[str, float], floor: float | None, parser_name: str | None) -> int:
    """Print ops/s and the ratios; 0 if both targets are met, else 1."""
    if parser_name is None:
        parser_name = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "python parser"
    print(f"{n} writes, batches of {BATCH}, redis-py {redis.__version__} ({parser_name})")
    for name, seconds in best.items():
        print(f"  {name:<26} {n / seconds:>12,.0f} ops/s")
    if floor is not None:
        print(f"  {'redis-benchmark -P 1000':<26} {floor:>12,.0f} ops/s (the floor)")
    plain_ratio = best["hand MSET"] / best["freight sink plain k/v"]
    mixed_ratio = best["hand pipeline mixed"] / best["freight sink mixed"]
    mset_gain = best["hand pipeline SET"] / best["hand MSET"]
    print(f"sink plain k/v vs hand MSET:        {plain_ratio:.2f}x (target >= 0.9)")
    print(f"sink mixed vs hand pipeline mixed:  {mixed_ratio:.2f}x (target >= 1.0)")
    print(f"hand MSET vs hand pipeline SET:     {mset_gain:.2f}x")
    return 0 if plain_ratio >= 0.9 and mixed_ratio >= 1.0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--one-by-one", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--python-parser", action="store_true")
    args = parser.parse_args()
    options: dict[str, Any] = {}
    if args.python_parser:
        from redis._parsers import _RESP2Parser

        options["parser_class"] = _RESP2Parser
    client: Any = redis.Redis.from_url(args.url, **options)
    sink = RedisSink(redis.Redis.from_url(args.url, **options))
    prefix = f"freight-bench:{uuid.uuid4().hex}"
    runs = paths(client, sink, args.n, prefix)
    best: dict[str, float] = {}
    try:
        ones = [(f"{prefix}:one{i}", "v") for i in range(args.one_by_one)]
        best["one-by-one SET"] = timed(lambda: [client.set(k, v) for k, v in ones])
        best["one-by-one SET"] *= args.n / args.one_by_one
        for _ in range(args.repeat):  # interleaved: a busy moment hurts every path alike
            for name, run in runs.items():
                elapsed = timed(run)
                best[name] = min(best.get(name, elapsed), elapsed)
        floor = redis_benchmark()
    finally:
        for part in chunks(list(client.scan_iter(f"{prefix}:*", count=10_000))):
            client.unlink(*part)
        sink.close()
        client.close()
    return report(args.n, best, floor, "python parser" if args.python_parser else None)


if __name__ == "__main__":
    sys.exit(main())
