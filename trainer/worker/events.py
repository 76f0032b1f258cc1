"""The worker's two channels to the daemon: JSON-line events out, commands in.

Events go to a pipe the daemon passed as `--events-fd`, one object per line,
each written with a single `os.write` so a line is never interleaved or half
sent. Commands arrive on stdin; EOF there means the daemon died, and the
worker exits at once (checkpoints are atomic, so nothing is left half written).
Ranks other than 0 have no events fd: their events go to their log only.
This module must not import mlx.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time

# Exit code when the daemon vanished (stdin EOF): nobody is left to read it,
# but it tells a human reading a shell apart from a crash.
DAEMON_GONE_EXIT = 3


class EventWriter:
    """Writes events as JSON lines to `fd`, or only to stdout (the log) when fd is None."""

    def __init__(self, fd: int | None, echo=sys.stdout):
        self._fd = fd
        self._echo = echo
        self._lock = threading.Lock()

    def emit(self, type_: str, **fields) -> dict:
        event = _clean({"type": type_, "time": time.time(), **fields})
        line = json.dumps(event, allow_nan=False) + "\n"
        with self._lock:
            if self._fd is not None:
                data = line.encode()
                while data:
                    data = data[os.write(self._fd, data) :]
            if self._echo is not None and type_ != "setup":
                # A short human line in train.log, so the log alone tells the story.
                print(f"[{type_}] " + _summary(event), file=self._echo, flush=True)
        return event

    def log(self, level: str, message: str) -> None:
        self.emit("log", level=level, message=message)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def _clean(value):
    """JSON-safe values: NaN and infinities (a diverged loss) become null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary(event: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time"))


class ControlReader:
    """Reads `{"command": ...}` lines from stdin in a daemon thread.

    The training loop polls `cancel_requested` / `stop_requested` between
    steps. EOF calls `on_eof` (by default `os._exit`): the daemon is gone.
    """

    def __init__(self, stream=None, on_eof=None):
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._on_eof = on_eof or (lambda: os._exit(DAEMON_GONE_EXIT))
        self.cancel_requested = threading.Event()
        self.stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-reader", daemon=True)

    def start(self) -> ControlReader:
        self._thread.start()
        return self

    @property
    def any_requested(self) -> bool:
        return self.cancel_requested.is_set() or self.stop_requested.is_set()

    def _run(self) -> None:
        for raw in iter(self._stream.readline, b""):
            try:
                command = json.loads(raw).get("command")
            except (ValueError, AttributeError):
                print(
                    f"[control] ignored a line that is not a JSON command: {raw!r}", file=sys.stderr
                )
                continue
            if command == "cancel":
                self.cancel_requested.set()
            elif command == "stop":
                self.stop_requested.set()
            else:
                print(f"[control] ignored unknown command {command!r}", file=sys.stderr)
        print(
            "[control] stdin closed: the daemon is gone; exiting now", file=sys.stderr, flush=True
        )
        self._on_eof()
