"""The live fan-out: publishing never waits, slow subscribers are dropped."""

import asyncio

from tunewire.trainer.jobs.event_bus import EventBus
from tunewire.v1 import training_event_pb2 as training_event_pb


def _event(job_id: str, seq: int) -> training_event_pb.TrainingEvent:
    return training_event_pb.TrainingEvent(job_id=job_id, sequence=seq)


async def test_every_subscriber_gets_every_event_in_order():
    bus = EventBus()
    subs = [bus.subscribe("job-a") for _ in range(100)]
    other = bus.subscribe("job-b")
    for seq in range(1, 6):
        bus.publish(_event("job-a", seq))
    for sub in subs:
        got = [(await sub.next()).sequence for _ in range(5)]
        assert got == [1, 2, 3, 4, 5]
    assert other.queue.empty()


async def test_a_subscriber_that_stops_reading_is_dropped_and_others_continue():
    bus = EventBus(queue_size=4)
    slow = bus.subscribe("job-a")
    fast = bus.subscribe("job-a")
    for seq in range(1, 11):
        bus.publish(_event("job-a", seq))
        assert (await fast.next()).sequence == seq
    assert slow.dropped and slow.drop_reason == "slow"
    assert bus.subscriber_count("job-a") == 1
    # The dropped subscriber can still drain what it had, then learns it was dropped.
    drained = []
    while (event := await slow.next()) is not None:
        drained.append(event.sequence)
    assert drained == [1, 2, 3, 4]


async def test_shutdown_wakes_blocked_subscribers():
    bus = EventBus()
    sub = bus.subscribe("job-a")
    waiter = asyncio.create_task(sub.next())
    await asyncio.sleep(0)
    bus.close_all()
    assert await asyncio.wait_for(waiter, 1) is None
    assert sub.drop_reason == "shutdown"
