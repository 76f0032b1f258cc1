"""The shared queue on PostgreSQL: claims with 1, 2 and 4 trainers, and event delay across trainers.

    .venv/bin/python -m bench.shared_queue [--jobs 400] [--rounds 2] [--events 300] [--database URL]

Without --database it starts a throwaway server (initdb/pg_ctl, as the tests do;
fsync off). Two measurements, both through the store's own code:

1. Claims: N trainer processes (1, 2, 4) drain a queue of tiny jobs. Each job
   is claimed (`LeaseStore.claim`, FOR UPDATE SKIP LOCKED), then written the way
   the runner writes a job that starts and finishes at once: STARTING, RUNNING and
   SUCCEEDED, each a fenced update with its event. No worker runs (a worker's
   start-up, seconds, would hide the queue); so this is the queue's ceiling.
   Reported: claim latency p50/p99 and jobs finished per second.
2. Event delay: trainer A appends an event (a fenced update, as a worker's
   metrics reach the store); a subscriber on trainer B receives it through
   LISTEN/NOTIFY -> EventRelay -> EventBus. Against the single-machine path:
   the subscriber on the writing trainer (runner.apply publishes to its own
   bus), on SQLite (the default) and on PostgreSQL. p50/p99 of the
   time from the write's start to the subscriber's wake-up, events paced at 200/s.
Rounds alternate the configurations; the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

from tunewire.trainer.jobs.event_bus import EventBus
from tunewire.trainer.jobs.event_relay import EventRelay
from tunewire.trainer.store.database import open_database
from tunewire.trainer.store.jobs import EVENTS_CHANNEL, QUEUE_CHANNEL, JobStore, now_timestamp
from tunewire.trainer.store.leases import LeaseStore
from tunewire.trainer.store.notifications import Listener
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

STATES = (
    training_job_pb.JOB_STATE_STARTING,
    training_job_pb.JOB_STATE_RUNNING,
    training_job_pb.JOB_STATE_SUCCEEDED,
)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _fresh_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _log(message: str) -> training_event_pb.TrainingEvent:
    return training_event_pb.TrainingEvent(log=training_event_pb.LogLine(message=message))


def _fill(url: str, jobs: int) -> None:
    database = open_database(url)
    store = JobStore(database)
    for i in range(jobs):
        store.insert(
            training_job_pb.TrainingJob(
                id=f"job-{i:05d}",
                owner="bench",
                state=training_job_pb.JOB_STATE_QUEUED,
                create_time=now_timestamp(),
            ),
            _log("created"),
        )
    database.close()


def _trainer(url: str, name: str, ready, start, out) -> None:
    database = open_database(url)
    store, leases = JobStore(database, origin=name), LeaseStore(database, ttl_seconds=30)
    ready.put(name)
    start.wait()
    latencies, done = [], 0
    while True:
        t0 = time.perf_counter()
        claimed = leases.claim(name)
        latencies.append(time.perf_counter() - t0)
        if not claimed:
            break
        for state in STATES:
            store.update(
                claimed[0].job_id, lambda j, s=state: setattr(j, "state", s), _log(name), claimed[0]
            )
        done += 1
    database.close()
    out.put((latencies[:-1], done, time.perf_counter()))


def claims(admin_url: str, trainers: int, jobs: int) -> dict[str, float]:
    url = _fresh_database(admin_url, f"bench_claims_{trainers}")
    _fill(url, jobs)
    ctx = multiprocessing.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_trainer, args=(url, f"t{i}", ready, start, out))
        for i in range(trainers)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every process connected and waiting
        ready.get(timeout=120)
    began = time.perf_counter()
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    ended = max(r[2] for r in results)
    latencies = [x for r in results for x in r[0]]
    finished = sum(r[1] for r in results)
    assert finished == jobs, (finished, jobs)
    return {
        "p50_ms": _pct(latencies, 0.5) * 1e3,
        "p99_ms": _pct(latencies, 0.99) * 1e3,
        "jobs_per_s": jobs / (ended - began),
    }


async def _event_delays(
    writer: JobStore, bus: EventBus, job_id: str, count: int, publish_locally: bool
) -> list[float]:
    sub = bus.subscribe(job_id)
    sent: dict[int, float] = {}
    delays: list[float] = []

    async def receive() -> None:
        while len(delays) < count:
            event = await sub.next()
            assert event is not None
            if event.sequence in sent:
                delays.append(time.perf_counter() - sent.pop(event.sequence))

    reader = asyncio.create_task(receive())
    for i in range(count):
        t0 = time.perf_counter()
        seq = writer.get(job_id).last_event_sequence + 1
        sent[seq] = t0
        _, stored = writer.update(job_id, None, _log(f"step {i}"))
        if publish_locally and stored is not None:
            bus.publish(stored)
        await asyncio.sleep(0.005)
    await asyncio.wait_for(reader, 60)
    bus.unsubscribe(sub)
    return delays


async def event_delay_shared(admin_url: str, count: int) -> dict[str, float]:
    url = _fresh_database(admin_url, "bench_events")
    _fill(url, 1)
    db_a, db_b = open_database(url), open_database(url)
    store_a, store_b = JobStore(db_a, origin="a"), JobStore(db_b, origin="b")
    bus_b = EventBus()
    relay = EventRelay(store_b, bus_b, "b", lambda: None)
    listener = Listener(
        url, (QUEUE_CHANNEL, EVENTS_CHANNEL), relay.heard, asyncio.get_running_loop()
    )
    listener.start()
    try:
        delays = await _event_delays(store_a, bus_b, "job-00000", count, publish_locally=False)
    finally:
        listener.stop()
        db_a.close()
        db_b.close()
    return {"p50_ms": _pct(delays, 0.5) * 1e3, "p99_ms": _pct(delays, 0.99) * 1e3}


async def event_delay_local(count: int, admin_url: str = "") -> dict[str, float]:
    """Subscriber on the writing trainer itself (runner.apply publishes to its own bus):
    on SQLite, the single-machine default, or on PostgreSQL with `admin_url`."""
    with tempfile.TemporaryDirectory() as tmp:
        target = (
            _fresh_database(admin_url, "bench_events_local")
            if admin_url
            else str(Path(tmp) / "state.db")
        )
        _fill(target, 1)
        database = open_database(target)
        bus = EventBus()
        try:
            delays = await _event_delays(
                JobStore(database), bus, "job-00000", count, publish_locally=True
            )
        finally:
            database.close()
    return {"p50_ms": _pct(delays, 0.5) * 1e3, "p99_ms": _pct(delays, 0.99) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--database", default="", help="postgresql:// URL of a server to use")
    args = parser.parse_args()
    server = None
    admin = args.database
    if not admin:
        from tests.postgres_server import start_server

        server = start_server()
        admin = server.url()
    try:
        load = os.getloadavg()
        claim_rows: dict[int, list[dict[str, float]]] = {1: [], 2: [], 4: []}
        event_rows: dict[str, list[dict[str, float]]] = {"shared": [], "local": [], "pg": []}
        paths = {
            "local": lambda: event_delay_local(args.events),
            "pg": lambda: event_delay_local(args.events, admin),
            "shared": lambda: event_delay_shared(admin, args.events),
        }
        for round_ in range(args.rounds):
            order = [1, 2, 4] if round_ % 2 == 0 else [4, 2, 1]
            for n in order:
                claim_rows[n].append(claims(admin, n, args.jobs))
            for name in list(paths) if round_ % 2 == 0 else reversed(list(paths)):
                event_rows[name].append(asyncio.run(paths[name]()))
        load_after = os.getloadavg()
    finally:
        if server is not None:
            server.stop()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print("## Shared queue: claims on PostgreSQL with 1, 2 and 4 trainers\n")
    print(
        f"{args.jobs} tiny jobs (claim + STARTING, RUNNING, SUCCEEDED fenced writes, no worker), "
        f"median of {args.rounds} alternated rounds; PostgreSQL {'given' if args.database else 'local, fsync off'}; "
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after: "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} CPUs.\n"
    )
    print("| trainers | claim p50 (ms) | claim p99 (ms) | jobs/s | vs 1 trainer |")
    print("|---:|---:|---:|---:|---:|")
    base = med(claim_rows[1], "jobs_per_s")
    for n, rows in claim_rows.items():
        rate = med(rows, "jobs_per_s")
        print(
            f"| {n} | {med(rows, 'p50_ms'):.2f} | {med(rows, 'p99_ms'):.2f} | {rate:.0f} | "
            f"{rate / base:.2f}x |"
        )
    print(
        "\n## Shared queue: event delay from trainer A's store write to a subscriber on trainer B\n"
    )
    print(f"{args.events} events paced at ~200/s, median of {args.rounds} rounds of p50/p99.\n")
    print("| path | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|")
    print(
        f"| one machine: SQLite, local bus | {med(event_rows['local'], 'p50_ms'):.2f} | "
        f"{med(event_rows['local'], 'p99_ms'):.2f} |"
    )
    print(
        f"| one trainer on PostgreSQL, local bus | {med(event_rows['pg'], 'p50_ms'):.2f} | "
        f"{med(event_rows['pg'], 'p99_ms'):.2f} |"
    )
    print(
        f"| two trainers: PostgreSQL, LISTEN/NOTIFY, relay | {med(event_rows['shared'], 'p50_ms'):.2f} | "
        f"{med(event_rows['shared'], 'p99_ms'):.2f} |"
    )


if __name__ == "__main__":
    main()
