"""What the RabbitMQ, NATS and Kafka sinks share: turning an item into a message body,
its headers and its key, and the per-item outcome list of the handler contract.

No client library is imported here, so the three connectors agree on what an item
becomes whatever extras are installed:

- ``bytes`` (and ``bytearray``, ``memoryview``) are sent as they are, ``str`` as UTF-8,
  anything else as compact JSON (``json.dumps``; a value JSON cannot encode fails alone
  with a :class:`~freight.PermanentError` naming its type, before anything is sent);
- ``key`` (routing key, subject, record key) and ``headers`` are taken from the item by
  the callables the sink was given, so one sink serves many routes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from freight._errors import ConfigError, ConfigTypeError, PermanentError

__all__ = [
    "CONTENT_TYPE",
    "content_type",
    "JSON",
    "Outgoing",
    "check_url",
    "decode",
    "encode",
    "is_json",
    "prepare",
    "settled",
    "to_key",
]

Encoder = Callable[[Any], bytes]
KeyFn = Callable[[Any], str | None]
HeadersFn = Callable[[Any], Mapping[str, str] | None]


def encode(value: Any) -> bytes:
    """The default body of ``value``: bytes as they are, text as UTF-8, else compact JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


JSON = "application/json"
"""The content type a JSON body is sent with (a header for NATS and Kafka)."""

CONTENT_TYPE = "content-type"
"""The header naming a body's content type (NATS, Kafka)."""


def content_type(headers: Mapping[str, str]) -> str | None:
    """The ``content-type`` header of a delivery, whatever its case (``Content-Type``
    from another producer counts: header names are case-insensitive)."""
    found = headers.get(CONTENT_TYPE)
    if found is not None:
        return found
    for name, value in headers.items():
        if name.lower() == CONTENT_TYPE:
            return value
    return None


def is_json(value: Any) -> bool:
    """Whether :func:`encode` writes ``value`` as JSON (not bytes, not text)."""
    return not isinstance(value, bytes | bytearray | memoryview | str)


def decode(body: bytes, content_type: str | None) -> Any:
    """The default decoding of a delivery: JSON back to values when it was sent as
    JSON (``content_type``, its parameters and case aside: ``application/json;
    charset=utf-8`` from another producer is JSON too), else the bytes as they are."""
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() == JSON:
        return json.loads(body)
    return body


@dataclass(slots=True)
class Outgoing:
    """One item ready to send: its body, key and headers (or the reason it cannot be)."""

    body: bytes
    key: str | None
    headers: dict[str, str]
    json: bool = False
    """The default encoder wrote the body as JSON (sent as ``content-type``, so a freight
    source decodes it back by default)."""


def check_url(url: object, what: str, schemes: tuple[str, ...], example: str) -> str:
    """``url`` when it is a string whose scheme is one of ``schemes`` (``""``: a bare
    ``host:port`` is accepted too); else the :class:`~freight.ConfigError` that names
    it and the form to pass, at construction rather than at the first fetch or write
    (an ``http://`` URL reached the broker's port and failed late, or not at all)."""
    if not isinstance(url, str):
        raise ConfigTypeError(
            f"{what} url must be a string such as {example!r}, got {url!r} ({type(url).__name__})"
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in schemes or not url.strip():
        allowed = ", ".join(f"{s}://" for s in schemes if s)
        raise ConfigError(
            f"{what} url {url!r} is not a {allowed} URL; pass one such as {example!r}"
        )
    return url


def to_key(value: str | KeyFn | None, name: str) -> KeyFn | None:
    """A fixed key or a callable ``item -> key``, as a callable (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        fixed = value
        return lambda _item: fixed
    if callable(value):
        return value
    raise ConfigTypeError(
        f"{name} must be a string or a callable taking an item and returning a string, "
        f"got {value!r} ({type(value).__name__})"
    )


def prepare(
    items: Sequence[Any],
    *,
    encoder: Encoder,
    key: KeyFn | None,
    headers: HeadersFn | None,
) -> list[Outgoing | PermanentError]:
    """Each item as an :class:`Outgoing`, or the :class:`~freight.PermanentError` that
    makes it unsendable (its encoder, key or headers function raised)."""
    prepared: list[Outgoing | PermanentError] = []
    for item in items:
        try:
            body = encoder(item)
            if not isinstance(body, bytes | bytearray | memoryview):
                raise TypeError(f"the encoder returned {type(body).__name__}, not bytes")
            found = headers(item) if headers is not None else None
            prepared.append(
                Outgoing(
                    bytes(body),
                    key(item) if key is not None else None,
                    {str(k): str(v) for k, v in (found or {}).items()},
                    json=encoder is encode and is_json(item),
                )
            )
        except Exception as exc:
            error = PermanentError(
                f"item of type {type(item).__name__} cannot be sent: {exc}; pass encode=, "
                "key= or headers= functions that accept it"
            )
            error.__cause__ = exc
            prepared.append(error)
    return prepared


def settled(outcomes: list[Any]) -> list[Any] | None:
    """``None`` when every item succeeded (the sink contract's all-good answer), else
    the outcomes (``None`` for a sent item, an ``Exception`` for a failed one)."""
    return outcomes if any(isinstance(o, BaseException) for o in outcomes) else None
