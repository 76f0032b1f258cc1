"""What the gateway adds to a unary call: latency and throughput, through it and straight to the trainer.

    .venv/bin/python bench/gateway_overhead.py [--seconds 4] [--rounds 3]

Starts `tunewire-trainer` and `tunewire-gateway` as their own processes (the
way they run in production) and calls the same cheap RPC (GetServerInfo, so
the gateway's share shows) from one gRPC client process, with 1 and with 32
concurrent callers. Rounds alternate between the paths so that other load on
the machine hits them alike. Paths:

- direct: client → trainer;
- gateway: client → gateway (key check, rate limiter on with a limit too high
  to be reached, byte-level forwarding) → trainer;
- bare proxy: client → the least a grpc.aio process can do to pass a call on
  (one handler, no auth, no limits) → trainer; the floor for any Python proxy.

Reports p50/p99 latency, the latency the gateway adds, throughput ratios, and
the CPU time each process spends per call (from /proc, Linux). Prints a
Markdown section for bench/RESULTS.md.
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
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tunewire.gateway.keys import add_key
from tunewire.identity import INTERNAL_TOKEN_HEADER, read_credential
from tunewire.v1 import training_service_pb2 as training_service_pb

METHOD = "/tunewire.v1.TrainingService/GetServerInfo"
CONCURRENCY = (1, 32)
PATHS = ("direct", "gateway", "bare proxy")
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


# ---- the bare proxy (runs in its own process: `--bare-proxy PORT TRAINER`) ----------------


async def serve_bare_proxy(port: int, trainer: str) -> None:
    channel = grpc.aio.insecure_channel(trainer)
    forward = channel.unary_unary(METHOD)
    # Like the gateway, it presents the trainer's credential (made when the trainer starts).
    home = Path(os.environ["TUNEWIRE_HOME"])
    metadata: list = []

    async def handler(request: bytes, context) -> bytes:
        if not metadata:
            metadata.append((INTERNAL_TOKEN_HEADER, read_credential(home)))
        return await forward(request, metadata=metadata)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "tunewire.v1.TrainingService",
                {"GetServerInfo": grpc.unary_unary_rpc_method_handler(handler)},
            ),
        )
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# ---- measuring -----------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {
        "client": time.process_time(),
        **{name: process_cpu_seconds(pid) for name, pid in pids.items()},
    }


async def run_round(address: str, metadata, concurrency: int, seconds: float, pids: dict[str, int]):
    """Calls GetServerInfo from `concurrency` callers for `seconds`: per-call latencies
    in ms, the elapsed time, and the CPU seconds each process spent meanwhile."""
    request = training_service_pb.GetServerInfoRequest().SerializeToString()
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD)
        for _ in range(WARMUP_CALLS // concurrency + 1):
            await asyncio.gather(*(call(request, metadata=metadata) for _ in range(concurrency)))
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def caller():
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                await call(request, metadata=metadata)
                latencies.append((time.perf_counter() - start) * 1e3)

        cpu_before = cpu_snapshot(pids)
        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        cpu = {name: used - cpu_before[name] for name, used in cpu_snapshot(pids).items()}
        return latencies, elapsed, cpu


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(args, addresses: dict[str, str], home: Path, key: str, pids) -> dict:
    for address in addresses.values():
        await wait_serving(address)
    auth = (("authorization", f"Bearer {key}"),)
    # The direct path calls the trainer as its operator does, with the credential.
    metadata = {path: auth for path in PATHS}
    metadata["direct"] = (*auth, (INTERNAL_TOKEN_HEADER, read_credential(home)))
    results = {}
    for concurrency in CONCURRENCY:
        rounds: dict[str, list] = {path: [] for path in PATHS}
        for _ in range(args.rounds):
            for path in PATHS:
                rounds[path].append(
                    await run_round(
                        addresses[path], metadata[path], concurrency, args.seconds, pids
                    )
                )
        results[concurrency] = {}
        for path, runs in rounds.items():
            latencies = [x for lat, _, _ in runs for x in lat]
            results[concurrency][path] = {
                "p50": percentile(latencies, 50),
                "p99": percentile(latencies, 99),
                # The best round: the least disturbed by the rest of the machine.
                "rps": max(len(lat) / elapsed for lat, elapsed, _ in runs),
                # CPU milliseconds per call of each process, over all rounds.
                "cpu_ms": {
                    proc: 1e3 * sum(cpu[proc] for _, _, cpu in runs) / len(latencies)
                    for proc in pids | {"client": 0}
                },
            }
    return results


def report(args, results: dict) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "## Gateway overhead",
        "",
        (
            f"Command: `.venv/bin/python bench/gateway_overhead.py --seconds {args.seconds:g} --rounds {args.rounds}` "
            f"({time.strftime('%Y-%m-%d')}; {cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
            f"at the end; Python {platform.python_version()}, grpcio {grpc.__version__}). "
            "Trainer, gateway, bare proxy and client each in their own process on this machine; `GetServerInfo` "
            f"through each path, {args.rounds} alternating rounds of {args.seconds:g} s per path and concurrency. "
            "Latency percentiles over all rounds; throughput of each path's best round."
        ),
        "",
        "| callers | path | p50 ms | p99 ms | added p50 ms | added p99 ms | calls/s | vs direct |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, paths in results.items():
        direct = paths["direct"]
        for path, s in paths.items():
            added = (
                f"{s['p50'] - direct['p50']:.2f} | {s['p99'] - direct['p99']:.2f}"
                if path != "direct"
                else "- | -"
            )
            lines.append(
                f"| {concurrency} | {path} | {s['p50']:.2f} | {s['p99']:.2f} | {added} | {s['rps']:,.0f} | "
                f"{s['rps'] / direct['rps']:.2f} |"
            )
    lines += [
        "",
        (
            "CPU time per call (ms, user + system, over all rounds): what each process spends on one call, "
            "whatever else runs on the machine."
        ),
        "",
        "| callers | path | client | gateway | bare proxy | trainer | all |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for concurrency, paths in results.items():
        for path, s in paths.items():
            c = s["cpu_ms"]
            hop = {"gateway": c["gateway"], "bare proxy": c["bare proxy"]}.get(path, 0.0)
            cells = [f"{c['client']:.3f}"]
            cells += [
                f"{c[name]:.3f}" if name == path else "-" for name in ("gateway", "bare proxy")
            ]
            cells += [f"{c['trainer']:.3f}", f"{c['client'] + hop + c['trainer']:.3f}"]
            lines.append(f"| {concurrency} | {path} | " + " | ".join(cells) + " |")
    lines += ["", "Targets: added p50 under 1.5 ms; gateway throughput at least 0.5x direct."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one round per path")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per path and concurrency"
    )
    parser.add_argument(
        "--bare-proxy", nargs=2, metavar=("PORT", "TRAINER"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.bare_proxy:
        asyncio.run(serve_bare_proxy(int(args.bare_proxy[0]), args.bare_proxy[1]))
        return
    with tempfile.TemporaryDirectory(prefix="tunewire-bench-") as tmp:
        home, keys = Path(tmp) / "home", Path(tmp) / "keys.yaml"
        key = add_key(keys, "bench", "admin")
        ports = {path: free_port() for path in PATHS}
        trainer = f"127.0.0.1:{ports['direct']}"
        env = {**os.environ, "TUNEWIRE_HOME": str(home)}
        commands = {
            "trainer": ["-m", "tunewire.trainer.main", "--home", str(home), "--listen", trainer],
            "gateway": [
                "-m",
                "tunewire.gateway.main",
                "--trainer",
                trainer,
                "--grpc-listen",
                f"127.0.0.1:{ports['gateway']}",
                "--http-listen",
                f"127.0.0.1:{free_port()}",
                "--keys",
                str(keys),
                "--rate",
                "1000000000",
                "--burst",
                "1000000000",
            ],
            "bare proxy": [__file__, "--bare-proxy", str(ports["bare proxy"]), trainer],
        }
        with open(Path(tmp) / "servers.log", "w") as log:
            processes = {
                name: subprocess.Popen(
                    [sys.executable, *argv], env=env, stdout=log, stderr=subprocess.STDOUT
                )
                for name, argv in commands.items()
            }
            try:
                addresses = {path: f"127.0.0.1:{port}" for path, port in ports.items()}
                pids = {name: p.pid for name, p in processes.items()}
                results = asyncio.run(measure(args, addresses, home, key, pids))
            finally:
                for process in processes.values():
                    process.terminate()
                for process in processes.values():
                    process.wait(timeout=30)
    print(report(args, results))


if __name__ == "__main__":
    main()
