"""A lightweight Matrix homeserver: one process, an embedded LevelDB store, state resolution at its core."""

from __future__ import annotations

__version__ = "0.1.0"
