"""Live fan-out of persisted job events to any number of subscribers.

Publishing never waits: each subscriber has a bounded queue, and one that falls
behind (its queue is full) is dropped on the spot. Training only ever pays a
`put_nowait` per subscriber; a dropped subscriber comes back with the last
sequence it saw and is replayed from the store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from tunewire.v1 import training_event_pb2 as training_event_pb

DEFAULT_QUEUE_SIZE = 1024


class Subscription:
    def __init__(self, job_id: str, maxsize: int):
        self.job_id = job_id
        self.queue: asyncio.Queue[training_event_pb.TrainingEvent | None] = asyncio.Queue(maxsize)
        self.dropped = False
        # Why the subscription ended early: "slow" (queue overflow) or "shutdown".
        self.drop_reason = ""

    async def next(self) -> training_event_pb.TrainingEvent | None:
        """The next live event, or None once the subscriber was dropped."""
        if self.dropped and self.queue.empty():
            return None
        return await self.queue.get()


class EventBus:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE):
        self._queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(job_id, self._queue_size)
        self._subscribers[job_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.job_id]

    def subscriber_count(self, job_id: str) -> int:
        return len(self._subscribers.get(job_id, ()))

    def publish(self, event: training_event_pb.TrainingEvent) -> None:
        for sub in list(self._subscribers.get(event.job_id, ())):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(sub, "slow")

    def close_job(self, job_id: str) -> None:
        """Wakes every subscriber of a job that will publish nothing more (shutdown)."""
        for sub in list(self._subscribers.get(job_id, ())):
            self._drop(sub, "shutdown")

    def close_all(self) -> None:
        for job_id in list(self._subscribers):
            self.close_job(job_id)

    def _drop(self, sub: Subscription, reason: str) -> None:
        sub.dropped = True
        sub.drop_reason = reason
        self.unsubscribe(sub)
        # Wake a reader blocked on an empty queue; a full queue has items to read
        # and the reader sees `dropped` once it has drained them.
        if sub.queue.empty():
            sub.queue.put_nowait(None)
