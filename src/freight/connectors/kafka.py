"""Kafka for freight (extra ``freight[kafka]``, aiokafka).

- :class:`KafkaSink` produces a batch with every record's delivery awaited, one outcome
  per record; its ``spec`` maps to the producer's ``linger_ms`` / ``max_batch_size``
  (:func:`producer_options`, :mod:`freight.connectors._kafkasink`).
- Errors are mapped to freight's classes in one place, :func:`classify`
  (:mod:`freight.connectors._kafkaerrors`).
"""

from __future__ import annotations

from freight.connectors._kafkaerrors import classify
from freight.connectors._kafkasink import KafkaSink, producer_options

__all__ = ["KafkaSink", "classify", "producer_options"]
