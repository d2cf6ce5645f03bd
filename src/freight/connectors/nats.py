"""NATS JetStream for freight (extra ``freight[nats]``, nats-py).

- :class:`NatsSink` publishes a batch awaiting every ack together, one outcome per
  message (:mod:`freight.connectors._natssink`).
- Errors are mapped to freight's classes in one place, :func:`classify`
  (:mod:`freight.connectors._natserrors`).
"""

from __future__ import annotations

from freight.connectors._natserrors import classify
from freight.connectors._natssink import NatsSink

__all__ = ["NatsSink", "classify"]
