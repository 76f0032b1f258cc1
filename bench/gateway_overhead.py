"""What the gateway adds to a unary call: latency and throughput, through it and straight to the trainer.

    .venv/bin/python bench/gateway_overhead.py [--seconds 4] [--rounds 3]

Starts `tunewire-trainer` and `tunewire-gateway` as their own processes (the
way they run in production) and calls the same RPC with one gRPC client
process (GetServerInfo: a cheap call, so the gateway's share shows), alternating direct and through-the-gateway rounds so that other load
on the machine hits both alike. With 1 and 32 concurrent callers it reports
p50 and p99 latency of each path, the latency the gateway adds, and the
throughput ratio. The gateway runs with its key check and rate limiter on (a
limit too high to be reached). Prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tunewire.gateway.keys import add_key
from tunewire.v1 import training_service_pb2 as svc

METHOD = "GetServerInfo"
CONCURRENCY = (1, 32)
WARMUP_CALLS = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_serving(address: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not become SERVING within {timeout} s")
            await asyncio.sleep(0.2)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {"client": time.process_time(), **{name: process_cpu_seconds(pid) for name, pid in pids.items()}}


async def run_round(address: str, method: str, request, metadata, concurrency: int, seconds: float,
                    pids: dict[str, int] | None = None):
    """Calls `method` from `concurrency` callers for `seconds`: per-call latencies in ms,
    the elapsed time, and the CPU seconds each process spent meanwhile."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            f"/tunewire.v1.TrainingService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=lambda b: b,
        )
        for _ in range(WARMUP_CALLS // concurrency + 1):
            await asyncio.gather(*(call(request, metadata=metadata) for _ in range(concurrency)))
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def caller():
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                await call(request, metadata=metadata)
                latencies.append((time.perf_counter() - start) * 1e3)

        cpu_before = cpu_snapshot(pids or {})
        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        cpu = {name: used - cpu_before[name] for name, used in cpu_snapshot(pids or {}).items()}
        return latencies, elapsed, cpu


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def measure(args, direct: str, gateway: str, metadata, pids: dict[str, int]) -> dict:
    request = svc.GetServerInfoRequest()
    results = {}
    for concurrency in CONCURRENCY:
        rounds = {"direct": [], "gateway": []}
        for _ in range(args.rounds):
            for name, address in (("direct", direct), ("gateway", gateway)):
                rounds[name].append(
                    await run_round(address, METHOD, request, metadata, concurrency, args.seconds, pids)
                )
        summary = {}
        for name, runs in rounds.items():
            latencies = [x for lat, _, _ in runs for x in lat]
            summary[name] = {
                "p50": percentile(latencies, 50),
                "p99": percentile(latencies, 99),
                # The best round: the least disturbed by the rest of the machine.
                "rps": max(len(lat) / elapsed for lat, elapsed, _ in runs),
                "calls": len(latencies),
                # CPU milliseconds per call of each process, over all rounds.
                "cpu_ms": {
                    proc: 1e3 * sum(cpu[proc] for _, _, cpu in runs) / len(latencies) for proc in runs[0][2]
                },
            }
        results[concurrency] = summary
    return results


def report(args, results: dict) -> str:
    cpu = platform.processor() or platform.machine()
    header = (
        "| callers | direct p50 ms | gateway p50 ms | added p50 ms | direct p99 ms | gateway p99 ms "
        "| added p99 ms | direct calls/s | gateway calls/s | gateway/direct |"
    )
    lines = [
        "## Gateway overhead",
        "",
        (
            f"Command: `.venv/bin/python bench/gateway_overhead.py --seconds {args.seconds:g} --rounds {args.rounds}` "
            f"({time.strftime('%Y-%m-%d')}; {cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
            f"at the end; Python {platform.python_version()}, grpcio {grpc.__version__}). "
            f"Trainer, gateway and client each in their own process on this machine; `{METHOD}` called through "
            f"the gateway (key check and rate limiter on) and straight to the trainer, {args.rounds} alternating "
            f"rounds of {args.seconds:g} s per path and concurrency. Latency percentiles over all rounds; "
            "throughput of the best round."
        ),
        "",
        header,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, s in results.items():
        d, g = s["direct"], s["gateway"]
        lines.append(
            f"| {concurrency} | {d['p50']:.2f} | {g['p50']:.2f} | {g['p50'] - d['p50']:.2f} | {d['p99']:.2f} | "
            f"{g['p99']:.2f} | {g['p99'] - d['p99']:.2f} | {d['rps']:,.0f} | {g['rps']:,.0f} | {g['rps'] / d['rps']:.2f} |"
        )
    lines += [
        "",
        (
            "CPU time per call of each process (ms; user + system, from /proc, over all rounds): what each hop "
            "costs, whatever else runs on the machine."
        ),
        "",
        "| callers | path | client | gateway | trainer | all three |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for concurrency, s in results.items():
        for name in ("direct", "gateway"):
            cpu = s[name]["cpu_ms"]
            gateway_cpu = f"{cpu['gateway']:.3f}" if name == "gateway" else "-"
            lines.append(
                f"| {concurrency} | {name} | {cpu['client']:.3f} | {gateway_cpu} | {cpu['trainer']:.3f} | "
                f"{cpu['client'] + cpu['trainer'] + (cpu['gateway'] if name == 'gateway' else 0):.3f} |"
            )
    lines += ["", "Targets: added p50 under 1.5 ms; gateway throughput at least 0.5x direct."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one round per path")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per path and concurrency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunewire-bench-") as tmp:
        home, keys = Path(tmp) / "home", Path(tmp) / "keys.yaml"
        key = add_key(keys, "bench", "admin")
        trainer_port, grpc_port, http_port = free_port(), free_port(), free_port()
        env = {**os.environ, "TUNEWIRE_HOME": str(home)}
        with open(Path(tmp) / "servers.log", "w") as log:
            trainer = subprocess.Popen(
                [sys.executable, "-m", "tunewire.trainer.main", "--home", str(home),
                 "--listen", f"127.0.0.1:{trainer_port}"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
            gateway = subprocess.Popen(
                [sys.executable, "-m", "tunewire.gateway.main", "--trainer", f"127.0.0.1:{trainer_port}",
                 "--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
                 "--keys", str(keys), "--rate", "1000000000", "--burst", "1000000000"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                pids = {"trainer": trainer.pid, "gateway": gateway.pid}
                results = asyncio.run(run(args, f"127.0.0.1:{trainer_port}", f"127.0.0.1:{grpc_port}", key, pids))
            finally:
                for process in (gateway, trainer):
                    process.terminate()
                for process in (gateway, trainer):
                    process.wait(timeout=30)
    print(report(args, results))


async def run(args, direct: str, through: str, key: str, pids: dict[str, int]) -> dict:
    await wait_serving(direct)
    await wait_serving(through)
    return await measure(args, direct, through, (("authorization", f"Bearer {key}"),), pids)


if __name__ == "__main__":
    main()
