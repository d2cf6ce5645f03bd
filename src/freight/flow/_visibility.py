"""Who may see an artifact: ``Public``, ``Private``, ``Tenant``, ``Labelled``.

A consumer never receives an artifact it may not see. The rules:

- ``Public()`` (the default): every consumer.
- ``Private(consumers={"audit"})``: only the named consumers.
- ``Tenant("acme")``: consumers of that tenant, and consumers that serve every tenant
  (declared without a tenant); never a consumer of another tenant. The tenant is part
  of every batch and join key, so batches never mix tenants.
  ``Tenant(extractor=lambda a: a.tenant_id)`` reads the tenant from the artifact when
  it is published.
- ``Labelled({"pii"})``: consumers that hold every one of the labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from freight._errors import ConfigError

__all__ = ["Labelled", "Private", "Public", "Tenant", "Visibility"]


@dataclass(frozen=True, slots=True)
class Public:
    """Visible to every consumer (the default)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "public"}


@dataclass(frozen=True, slots=True, init=False)
class Private:
    """Visible only to the named consumers."""

    consumers: frozenset[str]

    def __init__(self, consumers: Iterable[str]) -> None:
        if isinstance(consumers, str):
            consumers = [consumers]
        names = frozenset(consumers)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(
                f"Private(consumers=...) needs consumer names (non-empty strings), "
                f"got {consumers!r}"
            )
        object.__setattr__(self, "consumers", names)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "private", "consumers": sorted(self.consumers)}


@dataclass(frozen=True, slots=True)
class Tenant:
    """Visible to one tenant's consumers (and to consumers serving every tenant).

    Give the tenant (``Tenant("acme")``) or how to read it from the artifact
    (``Tenant(extractor=lambda a: a.tenant_id)``), not both.
    """

    tenant_id: str | None = None
    extractor: Callable[[Any], str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.tenant_id is None) == (self.extractor is None):
            raise ConfigError(
                "Tenant needs exactly one of tenant_id ('acme') or extractor "
                "(artifact -> tenant id)"
            )
        if self.tenant_id is not None and (
            not isinstance(self.tenant_id, str) or not self.tenant_id
        ):
            raise ConfigError(
                f"Tenant: tenant_id must be a non-empty string, got {self.tenant_id!r}"
            )

    def resolve(self, artifact: Any) -> Tenant:
        """This visibility with the tenant read from ``artifact`` (if by extractor)."""
        if self.extractor is None:
            return self
        tenant = self.extractor(artifact)
        if not isinstance(tenant, str) or not tenant:
            raise ConfigError(
                f"Tenant extractor returned {tenant!r} for a {type(artifact).__name__}; "
                "it must return a non-empty string"
            )
        return Tenant(tenant)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "tenant", "tenant_id": self.tenant_id}


@dataclass(frozen=True, slots=True, init=False)
class Labelled:
    """Visible to consumers that hold every one of ``labels``."""

    labels: frozenset[str]

    def __init__(self, labels: Iterable[str]) -> None:
        if isinstance(labels, str):
            labels = [labels]
        names = frozenset(labels)
        if not names:
            raise ConfigError("Labelled(labels) needs at least one label")
        object.__setattr__(self, "labels", names)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "labelled", "labels": sorted(self.labels)}


Visibility = Public | Private | Tenant | Labelled


def tenant_of(visibility: Visibility) -> str | None:
    """The tenant an artifact belongs to, if any."""
    return visibility.tenant_id if isinstance(visibility, Tenant) else None


def may_see(
    visibility: Visibility, consumer: str, tenant: str | None, labels: frozenset[str]
) -> bool:
    """May the consumer ``consumer`` (of ``tenant``, holding ``labels``) see it?"""
    if isinstance(visibility, Public):
        return True
    if isinstance(visibility, Private):
        return consumer in visibility.consumers
    if isinstance(visibility, Tenant):
        return tenant is None or tenant == visibility.tenant_id
    return visibility.labels <= labels


def from_json(data: dict[str, Any]) -> Visibility:
    """The visibility stored as ``to_json()``."""
    kind = data.get("kind")
    if kind == "private":
        return Private(data["consumers"])
    if kind == "tenant":
        return Tenant(data["tenant_id"])
    if kind == "labelled":
        return Labelled(data["labels"])
    return Public()


def check_visibility(value: object, where: str) -> Visibility | None:
    """``value`` if it is a visibility (or ``None``); else a clear error."""
    if value is None or isinstance(value, Public | Private | Tenant | Labelled):
        return value
    raise ConfigError(
        f"{where}: visibility must be Public(), Private(consumers=...), Tenant(...) or "
        f"Labelled(labels) from freight.flow, got {value!r}"
    )
