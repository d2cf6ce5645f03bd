"""Connectors: sinks and sources for real systems (SQLite here; more come as extras)."""
