"""How commands show a moment to a person."""

from __future__ import annotations

import time


def stamp(when: float) -> str:
    """Local time, to the second: ``2026-11-29 16:22:05``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
