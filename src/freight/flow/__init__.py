"""Flow: typed publish/subscribe pipelines with batched, filtered, correlated and
tenant-scoped consumers, on the core engine.

    from freight import BatchSpec, Flow
    from freight.flow import ForBatch, Group, Public, Private, Tenant, Labelled, After

See ``docs/flow.md``.
"""

from freight._core._join import JoinSpec
from freight.flow._artifacts import Envelope
from freight.flow._consumer import ConsumerBuilder, ConsumerSpec, Group
from freight.flow._flow import DeadLetter, Flow, PendingBatch
from freight.flow._handling import ForBatch
from freight.flow._trace import DuckDBTracer, OpenTelemetryTracer, Span
from freight.flow._visibility import After, Labelled, Private, Public, Tenant, Visibility

__all__ = [
    "After",
    "ConsumerBuilder",
    "ConsumerSpec",
    "DeadLetter",
    "DuckDBTracer",
    "Envelope",
    "Flow",
    "ForBatch",
    "Group",
    "JoinSpec",
    "Labelled",
    "OpenTelemetryTracer",
    "PendingBatch",
    "Private",
    "Public",
    "Span",
    "Tenant",
    "Visibility",
]
