"""Who may see an artifact: ``Public``, ``Private``, ``Tenant``, ``Labelled``, ``After``.

A consumer never receives an artifact it may not see. The rules (Flock's):

- ``Public()`` (the default): every consumer.
- ``Private(consumers={"audit"})`` (Flock spells it ``agents=``): only the named
  consumers.
- ``Tenant("acme")``: consumers of that tenant, and consumers that declared
  ``.all_tenants()``; never a consumer of another tenant, nor one declared without a
  tenant. ``Tenant(None)`` (or ``Tenant()``) is visible to every consumer.
  ``Tenant(extractor=lambda a: a.tenant_id)`` reads the tenant from the artifact when
  it is published. The tenant is part of every batch and join key, so batches and
  joins never mix tenants, even in an ``.all_tenants()`` consumer.
- ``Labelled({"pii"})`` (Flock: ``required_labels=``): consumers that hold every one
  of the labels.
- ``After(delay, then=...)`` (Flock: ``ttl=``): no consumer sees it until ``delay``
  seconds have passed on the flow's clock since it was published; then ``then``
  (``Public()`` by default) decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from freight._core._time import to_seconds
from freight._errors import ConfigError

__all__ = ["After", "Labelled", "Private", "Public", "Tenant", "Visibility"]


@dataclass(frozen=True, slots=True)
class Public:
    """Visible to every consumer (the default)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "public"}


@dataclass(frozen=True, slots=True, init=False)
class Private:
    """Visible only to the named consumers (``agents=`` is Flock's spelling)."""

    consumers: frozenset[str]

    def __init__(
        self, consumers: Iterable[str] | None = None, *, agents: Iterable[str] | None = None
    ) -> None:
        if (consumers is None) == (agents is None):
            raise ConfigError(
                "Private needs the consumer names, once: Private(consumers={'audit'}) "
                "(or Flock's Private(agents={'audit'}))"
            )
        consumers = consumers if consumers is not None else agents
        assert consumers is not None
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
    """Visible to one tenant's consumers (and to consumers declared ``.all_tenants()``).

    Give the tenant (``Tenant("acme")``) or how to read it from the artifact
    (``Tenant(extractor=lambda a: a.tenant_id)``), not both. ``Tenant(None)`` (or
    ``Tenant()``) belongs to no tenant: every consumer may see it, as in Flock.
    """

    tenant_id: str | None = None
    extractor: Callable[[Any], str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.tenant_id is not None and self.extractor is not None:
            raise ConfigError(
                "Tenant takes a tenant_id ('acme') or an extractor (artifact -> tenant id), "
                "not both"
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
    """Visible to consumers that hold every one of ``labels`` (Flock:
    ``required_labels=``); no labels: visible to all, as in Flock."""

    labels: frozenset[str]

    def __init__(
        self, labels: Iterable[str] | None = None, *, required_labels: Iterable[str] | None = None
    ) -> None:
        if labels is not None and required_labels is not None:
            raise ConfigError("Labelled takes labels or required_labels, not both")
        labels = labels if labels is not None else (required_labels or ())
        if isinstance(labels, str):
            labels = [labels]
        names = frozenset(labels)  # none: visible to all (as in Flock)
        object.__setattr__(self, "labels", names)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "labelled", "labels": sorted(self.labels)}


Immediate = Public | Private | Tenant | Labelled
"""A visibility that decides at once (what ``After`` turns into)."""


@dataclass(frozen=True, slots=True, init=False)
class After:
    """Visible to no consumer until ``delay`` seconds have passed on the flow's clock
    since it was published; from then on, ``then`` decides (``Public()`` by default).

    ``After(timedelta(hours=1), then=Tenant("acme"))``: an embargo, then one tenant.
    ``ttl=`` is Flock's spelling of ``delay``. A durable flow keeps an artifact still
    under embargo when it closes and delivers it once its delay has passed after a
    restart; an in-memory flow that closes first dead-letters it (``embargoed``).
    """

    delay: float
    then: Immediate

    def __init__(
        self,
        delay: float | timedelta | None = None,
        then: Immediate | None = None,
        *,
        ttl: float | timedelta | None = None,
    ) -> None:
        if (delay is None) == (ttl is None):
            raise ConfigError(
                "After needs its delay, once: After(30, then=...) or After(timedelta(hours=1)) "
                "(Flock spells it After(ttl=...))"
            )
        seconds = to_seconds(delay if delay is not None else ttl, "After.delay")
        if then is not None and not isinstance(then, Public | Private | Tenant | Labelled):
            raise ConfigError(
                f"After(then=...) takes Public(), Private(...), Tenant(...) or Labelled(...), "
                f"got {then!r} (for two delays, add them up in one After)"
            )
        object.__setattr__(self, "delay", seconds)
        object.__setattr__(self, "then", then if then is not None else Public())

    def to_json(self) -> dict[str, Any]:
        return {"kind": "after", "delay": self.delay, "then": self.then.to_json()}


Visibility = Public | Private | Tenant | Labelled | After


def tenant_of(visibility: Visibility) -> str | None:
    """The tenant an artifact belongs to, if any."""
    if isinstance(visibility, After):
        visibility = visibility.then
    return visibility.tenant_id if isinstance(visibility, Tenant) else None


def resolve(visibility: Visibility, artifact: Any) -> Visibility:
    """``visibility`` with a ``Tenant`` extractor (itself or ``After``'s) applied."""
    if isinstance(visibility, Tenant):
        return visibility.resolve(artifact)
    if isinstance(visibility, After) and isinstance(visibility.then, Tenant):
        then = visibility.then.resolve(artifact)
        if then is not visibility.then:
            return After(visibility.delay, then=then)
    return visibility


def may_see(
    visibility: Visibility,
    consumer: str,
    tenant: str | None,
    labels: frozenset[str],
    all_tenants: bool = False,
) -> bool:
    """May the consumer ``consumer`` (of ``tenant``, or serving ``all_tenants``,
    holding ``labels``) see it (once an ``After`` delay has passed)?"""
    if isinstance(visibility, After):
        visibility = visibility.then
    if isinstance(visibility, Private):
        return consumer in visibility.consumers
    if isinstance(visibility, Tenant):
        return visibility.tenant_id is None or all_tenants or tenant == visibility.tenant_id
    if isinstance(visibility, Labelled):
        return visibility.labels <= labels
    return True  # Public


def from_json(data: dict[str, Any]) -> Visibility:
    """The visibility stored as ``to_json()``."""
    kind = data.get("kind")
    if kind == "after":
        then = from_json(data["then"])
        assert not isinstance(then, After)
        return After(data["delay"], then=then)
    if kind == "private":
        return Private(data["consumers"])
    if kind == "tenant":
        return Tenant(data["tenant_id"])
    if kind == "labelled":
        return Labelled(data["labels"])
    return Public()


def check_visibility(value: object, where: str) -> Visibility | None:
    """``value`` if it is a visibility (or ``None``); else a clear error."""
    if value is None or isinstance(value, Public | Private | Tenant | Labelled | After):
        return value
    raise ConfigError(
        f"{where}: visibility must be Public(), Private(consumers=...), Tenant(...), "
        f"Labelled(labels) or After(delay, then=...) from freight.flow, got {value!r}"
    )
