"""Handing memory freed by a large operation back to the operating system.

glibc keeps freed heap memory in its arenas for reuse, so after a 1 GB upload
(thousands of chunk buffers, allocated in gRPC's threads and ours) the daemon
would stay at its peak. `malloc_trim` returns the free pages; elsewhere (macOS,
musl) there is no such call and nothing is done.
"""

from __future__ import annotations

import ctypes
import sys


def release_freed_memory() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
