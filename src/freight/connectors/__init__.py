"""Connectors: sinks and sources for real systems, and the broker source port.

The table connectors are modules of their own (``freight.connectors.sqlite``,
``.postgres``, ``.mysql``, ``.redis``, ``.http``, …), each behind its extra. This package
exports the broker source port and its consume driver, which every broker shares.
"""

from freight.connectors._broker import BrokerSource, ConsumeReport, Message, consume

__all__ = [
    "BrokerSource",
    "ConsumeReport",
    "Message",
    "consume",
]
