"""Artifacts on the board: the envelope each published value gets, and how it is stored.

An artifact is any pydantic model or dataclass instance. Publishing wraps it in an
:class:`Envelope` (id, type, producer, timestamps, visibility, tenant, correlation id,
depth). A durable board stores the value as JSON (``model_dump_json`` / the dataclass
fields) with the name of its type; reading it back looks the name up among the types
the flow's consumers declare: never an import by name, never pickle.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any, NamedTuple

from freight._errors import ConfigError
from freight.flow._visibility import Public, Visibility

__all__ = ["Envelope", "check_artifact", "type_name"]

_PUBLIC = Public()


class Envelope(NamedTuple):
    """One published artifact, as the board holds it (a tuple: cheap to make).

    Attributes:
        id: unique id (a UUID hex string).
        type: the artifact's type name (its ``__qualname__``).
        payload: the artifact itself.
        producer: the consumer that published it, or ``None`` for ``flow.publish``.
        created_at: the flow clock's time of publication (monotonic seconds).
        published_at: when it was published, timezone-aware UTC.
        visibility: who may see it.
        tenant: its tenant, when its visibility is a ``Tenant``.
        correlation_id: set by the publisher, inherited by what consumers publish from it.
        depth: how many consumer hops produced it (0 for ``flow.publish``).
    """

    id: str
    type: str
    payload: Any
    producer: str | None
    created_at: float
    published_at: datetime
    visibility: Visibility = _PUBLIC
    tenant: str | None = None
    correlation_id: str | None = None
    depth: int = 0


def type_name(kind: type) -> str:
    """The name a type is stored under: its qualified name (``Transaction``), the same
    whether its module runs as a script or is imported; a flow refuses two declared
    types of one name."""
    return kind.__qualname__


def is_artifact(value: object) -> bool:
    """A pydantic model or dataclass instance."""
    if isinstance(value, type):
        return False
    return dataclasses.is_dataclass(value) or hasattr(type(value), "model_dump_json")


def is_artifact_type(kind: object) -> bool:
    """A pydantic model class or a dataclass."""
    return isinstance(kind, type) and (
        dataclasses.is_dataclass(kind) or hasattr(kind, "model_validate_json")
    )


def check_artifact(value: object, where: str) -> None:
    """Refuse what is not an artifact, saying what is."""
    if not is_artifact(value):
        raise ConfigError(
            f"{where}: an artifact must be a pydantic model or a dataclass instance, "
            f"got {type(value).__name__}"
        )


def dump(value: Any) -> str:
    """The artifact as JSON text."""
    if hasattr(type(value), "model_dump_json"):
        return str(value.model_dump_json())
    return json.dumps(dataclasses.asdict(value), default=str)


def load(kind: type, text: str) -> Any:
    """The artifact of type ``kind`` stored as ``text``."""
    if hasattr(kind, "model_validate_json"):
        return kind.model_validate_json(text)
    return kind(**json.loads(text))
