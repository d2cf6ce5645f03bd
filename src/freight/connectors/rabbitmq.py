"""RabbitMQ for freight (extra ``freight[rabbitmq]``, aio-pika).

- :class:`RabbitMQSink` publishes a batch with publisher confirms: one wait for the
  whole batch, one outcome per message (:mod:`freight.connectors._rabbitsink`).
- Errors are mapped to freight's classes in one place, :func:`classify`
  (:mod:`freight.connectors._rabbiterrors`).
"""

from __future__ import annotations

from freight.connectors._rabbiterrors import classify
from freight.connectors._rabbitsink import RabbitMQSink

__all__ = ["RabbitMQSink", "classify"]
