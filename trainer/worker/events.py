"""The worker's two channels to the daemon: typed events out, commands in.

Events (`tunewire.trainer.protocol.events`) go to a pipe the daemon passed as
`--events-fd`: first the protocol header, then one line per event, each written
with a single `os.write` so a line is never interleaved or half sent. Commands
(`tunewire.trainer.protocol.commands`) arrive on stdin; EOF there means the
daemon died, and the worker exits at once (checkpoints are atomic, so nothing
is left half written). Ranks other than 0 have no events fd: their events go
to their log only. This module must not import mlx.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import IO, BinaryIO

from tunewire.trainer.protocol import commands
from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.protocol.commands import Command
from tunewire.trainer.protocol.events import Event, Log, LogLevel, ProtocolError

# Exit code when the daemon vanished (stdin EOF): nobody is left to read it,
# but it tells a human reading a shell apart from a crash.
DAEMON_GONE_EXIT = 3


class EventWriter:
    """Writes events to `fd` (after the protocol header), and a short line of each to `echo`
    (the job's log), so the log alone tells the story; fd None: the log only."""

    def __init__(self, fd: int | None, echo: IO[str] | None = sys.stdout):
        self._fd = fd
        self._echo = echo
        self._lock = threading.Lock()
        if fd is not None:
            self._write(protocol.header_line())

    def emit(self, event: Event) -> Event:
        line = protocol.encode(event)
        with self._lock:
            if self._fd is not None:
                self._write(line)
            if self._echo is not None:
                print(f"[{event.kind}] {summary(event)}", file=self._echo, flush=True)
        return event

    def log(self, level: LogLevel | str, message: str) -> None:
        self.emit(Log(level=LogLevel(level), message=message))

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def summary(event: Event) -> str:
    """The log's line for an event: `key=value` pairs; the setup record whole, as its
    protocol line (what the worker runs with is then on record next to what it did)."""
    if isinstance(event, protocol.Setup):
        return protocol.encode(event).decode().rstrip("\n")
    values = protocol.to_dict(event)
    del values["kind"], values["time"]
    return " ".join(f"{k}={v}" for k, v in values.items())


class ControlReader:
    """Reads command lines from stdin in a daemon thread.

    The training loop polls `cancel_requested` / `stop_requested` between
    steps. EOF calls `on_eof` (by default `os._exit`): the daemon is gone.
    """

    def __init__(
        self, stream: BinaryIO | None = None, on_eof: Callable[[], None] | None = None
    ) -> None:
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
                command = commands.decode(raw)
            except ProtocolError as exc:
                print(f"[control] ignored: {exc}", file=sys.stderr)
                continue
            if command is Command.CANCEL:
                self.cancel_requested.set()
            elif command is Command.STOP:
                self.stop_requested.set()
        print(
            "[control] stdin closed: the daemon is gone; exiting now", file=sys.stderr, flush=True
        )
        self._on_eof()
