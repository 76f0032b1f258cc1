"""Streaming: delay from a worker's report to a subscriber's receipt with 1 and 100 subscribers,
and the training slowdown with 100 subscribers against none.

    .venv/bin/python -m bench.trainer_streaming [--steps 150] [--rounds 2] [--subscribers 100]
        [--report-every 1] [--out FILE]

Starts `tunewire-trainer` in its own process and runs the same LoRA job on the
tiny model, by default with a metrics event every step (the worst case: about
eight events a second; the daemon's default is one every 10 steps), several times: with no subscriber (the bench
polls GetTrainingJob every
2 s and reads the events back after the job ended), with 1, and with 100
WatchTrainingJob streams, each on its own gRPC channel, all in this process's
event loop. Delay: a subscriber's `time.time()` when the message reaches it,
minus the event's `time` (the worker's `time.time()` as it wrote the event to its
pipe; same host, same clock): the pipe, the daemon's store write, the fan-out,
gRPC and the client's own decoding. Slowdown: steady-state tokens/s of the
job (wall time between its reports, from the events' timestamps), runs in
alternating order. Prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import common, processes

WARMUP_STEPS = 10
WINDOW_STEPS = (
    10  # throughput is read over windows of this many steps (a multiple of --report-every)
)
TARGET_SLOWDOWN = 0.02


async def subscribe(daemon: processes.Daemon, job_id: str, delays: list, ready: list) -> None:
    from tunewire.v1 import training_service_pb2 as training_service_pb
    from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

    async with daemon.channel() as channel:
        stub = training_service_grpc.TrainingServiceStub(channel)
        stream = stub.WatchTrainingJob(training_service_pb.WatchTrainingJobRequest(job_id=job_id))
        async for message in stream:
            now = time.time()
            if not ready:
                ready.append(now)
            event = message.event
            if event.HasField("training_metrics") and event.training_metrics.step > WARMUP_STEPS:
                delays.append(now - processes.event_seconds(event))


async def run_job(daemon: processes.Daemon, spec, subscribers: int) -> dict:
    from tunewire.v1 import training_job_pb2 as training_job_pb
    from tunewire.v1 import training_service_pb2 as training_service_pb
    from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

    terminal = {
        training_job_pb.JOB_STATE_SUCCEEDED,
        training_job_pb.JOB_STATE_FAILED,
        training_job_pb.JOB_STATE_CANCELLED,
    }
    async with daemon.channel() as channel:
        stub = training_service_grpc.TrainingServiceStub(channel)
        job = (
            await stub.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
        ).job
        client_cpu, daemon_cpu, began = time.process_time(), daemon.cpu_seconds(), time.time()
        delays: list[float] = []
        if subscribers:
            connected: list[list] = [[] for _ in range(subscribers)]
            await asyncio.gather(
                *(subscribe(daemon, job.id, delays, connected[i]) for i in range(subscribers))
            )
            connect_seconds = max(c[0] for c in connected) - began
        else:
            connect_seconds = 0.0
            while job.state not in terminal:
                await asyncio.sleep(2)
                job = (
                    await stub.GetTrainingJob(
                        training_service_pb.GetTrainingJobRequest(job_id=job.id)
                    )
                ).job
        client_cpu = time.process_time() - client_cpu
        daemon_cpu = daemon.cpu_seconds() - daemon_cpu
        # The job's own record of its reports, read back after it ended.
        reports, final = [], None
        async for message in stub.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job.id)
        ):
            event = message.event
            if event.HasField("training_metrics"):
                m = event.training_metrics
                if m.step % WINDOW_STEPS == 0:
                    reports.append((m.step, processes.event_seconds(event), m.trained_tokens))
            if event.HasField("state_change"):
                final = event.state_change.state
        if final != training_job_pb.JOB_STATE_SUCCEEDED:
            raise SystemExit(
                f"job {job.id} ended {training_job_pb.JobState.Name(final or 0)}; see {daemon.home}"
            )
    return {
        "subscribers": subscribers,
        "delays": delays,
        "intervals": common.interval_rates(reports, WARMUP_STEPS),
        "rate": common.steady_rate(reports, WARMUP_STEPS),
        "client_cpu": client_cpu,
        "daemon_cpu": daemon_cpu,
        "connect_seconds": connect_seconds,
    }


async def run(args) -> list[dict]:
    scratch = common.scratch_dir("trainer_streaming")
    raw = common.write_chat_data(scratch / "data" / "chat.jsonl")
    home = Path(tempfile.mkdtemp(prefix="home-", dir=scratch))
    spec = common.job_spec(
        common.model_dir("tiny"),
        raw,
        "lora",
        steps=args.steps,
        batch_size=4,
        seq_length=256,
        report_every=args.report_every,
    )
    daemon = processes.Daemon(home, raw.parent)
    runs = []
    try:
        await daemon.ready()
        counts = (0, 1, args.subscribers)
        for round_ in range(args.rounds):
            for n in counts if round_ % 2 == 0 else tuple(reversed(counts)):
                result = await run_job(daemon, spec, n)
                runs.append(result)
                print(
                    f"  round {round_ + 1}, {n} subscriber(s): {result['rate'].tokens_per_second:,.0f} tokens/s"
                    + (
                        f", delay p50 {1000 * common.percentile(result['delays'], 50):.1f} ms"
                        if n
                        else ""
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        daemon.stop()
    return runs


def report(args, runs: list[dict], load_at_start: float) -> str:
    by_count: dict[int, list[dict]] = {}
    for r in runs:
        by_count.setdefault(r["subscribers"], []).append(r)
    delay_rows = []
    for n in sorted(c for c in by_count if c):
        delays = [d * 1000 for r in by_count[n] for d in r["delays"]]
        delay_rows.append(
            [
                str(n),
                f"{len(delays):,}",
                f"{common.percentile(delays, 50):.1f}",
                f"{common.percentile(delays, 90):.1f}",
                f"{common.percentile(delays, 99):.1f}",
                f"{max(delays):.1f}",
                f"{common.median([r['connect_seconds'] for r in by_count[n]]) * 1000:.0f}",
            ]
        )
    speed_rows = []
    base = [v for r in by_count[0] for v in r["intervals"]]
    for n in sorted(by_count):
        values = [v for r in by_count[n] for v in r["intervals"]]
        steps = sum(r["rate"].steps for r in by_count[n])
        speed_rows.append(
            [
                str(n),
                f"{common.median(values):,.0f}",
                f"{max(values):,.0f}",
                f"{100 * (1 - common.median(values) / common.median(base)):+.1f}%" if n else "",
                f"{100 * (1 - max(values) / max(base)):+.1f}%" if n else "",
                f"{sum(r['daemon_cpu'] for r in by_count[n]) / steps * 1000:.1f}",
                f"{sum(r['client_cpu'] for r in by_count[n]) / steps * 1000:.1f}",
            ]
        )
    command = (
        f".venv/bin/python -m bench.trainer_streaming --steps {args.steps} --rounds {args.rounds} "
        f"--subscribers {args.subscribers} --report-every {args.report_every}"
    )
    every = "every step" if args.report_every == 1 else f"every {args.report_every} steps"
    return "\n".join(
        [
            f"## Trainer: streaming to subscribers (a metrics event {every})",
            "",
            f"Command: `{command}` ({common.machine_line(load_at_start)}).",
            "",
            (
                f"`tunewire-trainer` in its own process; a LoRA job on the tiny model (batch 4 x 256, {args.steps} "
                f"steps) with a metrics event {every}, run with 0, 1 and "
                f"{args.subscribers} WatchTrainingJob subscribers ({args.rounds} rounds, order alternated). The "
                "subscribers are streams on their own gRPC channels in the benchmark's process (one asyncio loop), "
                "on the same two CPUs as the daemon and the worker. Delay: receipt time at the subscriber minus the "
                f"worker's event time, every metrics event after step {WARMUP_STEPS} of every subscriber."
            ),
            "",
            common.table(
                [
                    "subscribers",
                    "deliveries",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "all subscribed after (ms)",
                ],
                delay_rows,
            ),
            "",
            (
                f"Training speed: tokens/s over windows of {WINDOW_STEPS} steps after step {WARMUP_STEPS}, from the "
                "job's own events; median and best window over all runs with that many subscribers. Slowdown: "
                "relative to no subscriber (positive: slower). CPU ms/step: CPU time of the daemon process and of "
                "the subscribers' process per training step."
            ),
            "",
            common.table(
                [
                    "subscribers",
                    "tokens/s (median)",
                    "tokens/s (best)",
                    "slowdown (medians)",
                    "slowdown (bests)",
                    "daemon CPU ms/step",
                    "subscribers' CPU ms/step",
                ],
                speed_rows,
            ),
            "",
            f"Target: slowdown with {args.subscribers} subscribers under {TARGET_SLOWDOWN:.0%}.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=150, help="training steps per run (a report each)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 0 / 1 / N-subscriber runs")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument(
        "--report-every",
        type=int,
        default=1,
        choices=(1, 2, 5, 10),
        help="steps between metrics events (1: the worst case)",
    )
    parser.add_argument("--out", help="also write the Markdown section to this file")
    args = parser.parse_args()
    if args.steps < WARMUP_STEPS + 2 * WINDOW_STEPS:
        raise SystemExit(
            f"--steps must be at least {WARMUP_STEPS + 2 * WINDOW_STEPS}, got {args.steps}"
        )
    load_at_start = os.getloadavg()[0]
    runs = asyncio.run(run(args))
    common.emit(report(args, runs, load_at_start), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
