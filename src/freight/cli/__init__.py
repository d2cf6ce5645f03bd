"""The ``freight`` command (extra ``freight[cli]``): thin, parse → call the library → render."""

from __future__ import annotations

from freight.cli._app import app, main

__all__ = ["app", "main"]
