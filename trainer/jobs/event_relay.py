"""Events written by other trainers, into this trainer's bus: any trainer answers Watch.

A trainer's own writes reach its bus directly (runner.apply). What other
trainers write arrives as a LISTEN/NOTIFY note ("<job id> <sequence> <origin>");
when someone here watches that job, the relay reads the new events from the
store and publishes them. Nothing polls: a job nobody watches here costs one
dictionary look-up per note. Watch itself fills any gap from the store.
"""

from __future__ import annotations

import logging

from tunewire.trainer.jobs.event_bus import EventBus
from tunewire.trainer.store.jobs import EVENTS_CHANNEL, QUEUE_CHANNEL, JobStore

log = logging.getLogger(__name__)


class EventRelay:
    def __init__(self, store: JobStore, bus: EventBus, origin: str, on_queued) -> None:
        self._store = store
        self._bus = bus
        self._origin = origin
        self._on_queued = on_queued
        # The highest sequence relayed per watched job.
        self._relayed: dict[str, int] = {}

    def heard(self, channel: str, payload: str) -> None:
        if channel == QUEUE_CHANNEL:
            self._on_queued()
            return
        if channel != EVENTS_CHANNEL:
            return
        try:
            job_id, sequence, origin = [*payload.split(" "), "", "", ""][:3]
            seq = int(sequence)
        except ValueError:
            log.warning("ignoring a malformed event note %r", payload)
            return
        if origin == self._origin:
            return
        if not self._bus.subscriber_count(job_id):
            self._relayed.pop(job_id, None)
            return
        last = self._relayed.get(job_id, seq - 1)
        if seq <= last:
            return
        for event in self._store.events_after(job_id, last):
            self._bus.publish(event)
            last = event.sequence
        self._relayed[job_id] = last
