"""RabbitMQ for freight (extra ``freight[rabbitmq]``, aio-pika).

- :class:`RabbitMQSink` publishes a batch with publisher confirms: one wait for the
  whole batch, one outcome per message (:mod:`freight.connectors._rabbitsink`).
- :class:`RabbitMQSource` consumes a queue in batches for
  :func:`~freight.connectors.consume`, at least once: prefetch sized to the batch, one
  ``multiple`` ack after the batch succeeded, permanent failures to a dead-letter
  exchange with their reason (:mod:`freight.connectors._rabbitsource`).
- Errors are mapped to freight's classes in one place, :func:`classify`
  (:mod:`freight.connectors._rabbiterrors`).
"""

from __future__ import annotations

from freight.connectors._rabbiterrors import classify
from freight.connectors._rabbitsink import RabbitMQSink
from freight.connectors._rabbitsource import ATTEMPTS, REASON, RabbitMQSource, declare_queue

__all__ = ["ATTEMPTS", "REASON", "RabbitMQSink", "RabbitMQSource", "classify", "declare_queue"]
