"""Event sources that turn OS notifications into "check these resources".

Today: inotify on managed paths (:class:`PathWatcher`). Child exits, s6 and
D-Bus signals join here as they land; each yields keys and a cause, never a
timer.
"""

from __future__ import annotations

from undistro.events._binding import Inotify, RawEvent, describe
from undistro.events._inotify import ENTRY_MASK, SETTLED_MASK, Batch, PathWatcher

__all__ = ["ENTRY_MASK", "SETTLED_MASK", "Batch", "Inotify", "PathWatcher", "RawEvent", "describe"]
