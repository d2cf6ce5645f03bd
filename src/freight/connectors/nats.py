"""NATS JetStream for freight (extra ``freight[nats]``, nats-py).

- :class:`NatsSink` publishes a batch awaiting every ack together, one outcome per
  message (:mod:`freight.connectors._natssink`).
- :class:`NatsSource` reads a stream through a durable pull consumer in batches for
  :func:`~freight.connectors.consume`, at least once: ack after success, ``nak`` with
  the backoff's delay on a transient failure, ``term`` on a permanent one (published
  first to a dead-letter subject with its reason) (:mod:`freight.connectors._natssource`).
- Errors are mapped to freight's classes in one place, :func:`classify`
  (:mod:`freight.connectors._natserrors`).
"""

from __future__ import annotations

from freight.connectors._natserrors import classify
from freight.connectors._natssink import NatsSink
from freight.connectors._natssource import REASON, NatsSource

__all__ = ["REASON", "NatsSink", "NatsSource", "classify"]
