"""Process resource figures for the metrics events."""

from __future__ import annotations

import os
import resource
import sys


def rss_bytes() -> int:
    """Current resident set size; the peak where the current one is not readable (macOS)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is in bytes on macOS, kibibytes on Linux.
        return peak if sys.platform == "darwin" else peak * 1024
