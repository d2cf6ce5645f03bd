"""Kafka for freight (extra ``freight[kafka]``, aiokafka).

- :class:`KafkaSink` produces a batch with every record's delivery awaited, one outcome
  per record; its ``spec`` maps to the producer's ``linger_ms`` / ``max_batch_size``
  (:func:`producer_options`, :mod:`freight.connectors._kafkasink`).
- :class:`KafkaSource` reads a topic as a consumer group member in batches for
  :func:`~freight.connectors.consume`, at least once: offsets committed only after
  the batch succeeded, rebalance-safe, permanent failures to ``<topic>.dead`` with
  their reason (:mod:`freight.connectors._kafkasource`).
- Errors are mapped to freight's classes in one place, :func:`classify`
  (:mod:`freight.connectors._kafkaerrors`).
"""

from __future__ import annotations

from freight.connectors._kafkaerrors import classify
from freight.connectors._kafkasink import KafkaSink, producer_options
from freight.connectors._kafkasource import REASON, KafkaSource

__all__ = ["REASON", "KafkaSink", "KafkaSource", "classify", "producer_options"]
