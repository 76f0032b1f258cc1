"""PostgreSQL's LISTEN/NOTIFY, heard on one dedicated connection in a thread.

The store sends a notification in the transaction that queues a job or
appends an event (jobs.py: QUEUE_CHANNEL, EVENTS_CHANNEL); PostgreSQL delivers
it at commit, so a listener that reads the store on hearing it finds the
change there. The thread hands each notification to the event loop; a lost
connection is reopened (what was sent meanwhile is missed: the trainers' own
polls at each heartbeat cover that).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

from tunewire.trainer.store.postgres import CONNECT_TIMEOUT_SECONDS, redacted

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0


class Listener:
    def __init__(
        self,
        url: str,
        channels: Iterable[str],
        on_notify: Callable[[str, str], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._url = url
        self._channels = list(channels)
        self._on_notify = on_notify
        self._loop = loop
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunewire-listen", daemon=True)

    def start(self, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
        """Starts listening; returns once LISTEN took effect (or the timeout passed)."""
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                ) as conn:
                    for channel in self._channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._ready.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.channel, note.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                log.warning("listening on %s failed (%s); reconnecting", redacted(self._url), exc)
                self._stop.wait(RECONNECT_SECONDS)

    def _deliver(self, channel: str, payload: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_notify, channel, payload)
        except RuntimeError:  # the loop closed under us: the trainer is stopping
            self._stop.set()
