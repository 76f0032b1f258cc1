"""The 2-host ring's all-reduce bandwidth through network namespaces, against loopback.

    sudo .venv/bin/python -m bench.namespace_allreduce [--rounds 3] [--repeats 20]

Two hosts on one machine, as tests/scale/test_two_hosts.py builds them (a network
namespace each, joined by a veth pair; root only): rank 0 runs in host A and
rank 1 in host B, with a ring hostfile naming their veth addresses, and time
`mx.distributed.all_sum` of float32 buffers the way bench/distributed_scaling.py
does on loopback (median after a barrier). Each round runs both, alternated:
the ranks in the namespaces, then the same two ranks on 127.0.0.1. The ranks are
started with `ip netns exec` rather than ssh: ssh only starts a rank (the
two-host test covers that path); the bytes all travel the veth pair.
Bandwidth = buffer bytes / time (a ring of 2 moves 1 x the buffer per rank).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import common
from bench.distributed_scaling import ALLREDUCE_SIZES, measure_allreduce
from tests.scale.hosts import ADDRESS_A, ADDRESS_B, HostsUnavailable, TwoHosts

SIZES = {
    "small LoRA (tiny adapters)": 155_648 * 4,
    "small FULL": 4_062_464 * 4,
    **{k: v for k, v in ALLREDUCE_SIZES.items() if v},
}


def through_namespaces(hosts: TwoHosts, sizes: list[int], repeats: int, scratch: Path) -> dict:
    job_dir = Path(tempfile.mkdtemp(prefix="ns-allreduce-", dir=scratch))
    hostfile = job_dir / "hostfile.json"
    hostfile.write_text(json.dumps([[f"{ADDRESS_A}:41100"], [f"{ADDRESS_B}:41101"]]))
    argv = [
        common.PYTHON, "-m", "bench.distributed_scaling",
        "--allreduce-child", ",".join(map(str, sizes)), "--repeats", str(repeats),
    ]  # fmt: skip
    procs = []
    for rank, ns in enumerate((hosts.ns_a, hosts.ns_b)):
        env = dict(
            common.bench_env(), MLX_RANK=str(rank), MLX_HOSTFILE=str(hostfile), MLX_WORLD_SIZE="2"
        )
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                cwd=common.REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"rank in a namespace failed:\n{err[-2000:]}")
    result = json.loads(outputs[0][0].strip().splitlines()[-1])
    return {int(k): v for k, v in result["seconds"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="all_sum repeats per size")
    args = parser.parse_args()
    load_start = os.getloadavg()
    scratch = common.scratch_dir("namespace_allreduce")
    sizes = sorted(set(SIZES.values()))
    hosts = TwoHosts(scratch)
    try:
        hosts.build()
    except HostsUnavailable as exc:
        raise SystemExit(f"cannot build the two hosts: {exc}") from None
    runs: dict[str, list[dict[int, float]]] = {"namespaces": [], "loopback": []}
    try:
        before = hosts.link_bytes()
        for round_ in range(args.rounds):
            order = ["namespaces", "loopback"] if round_ % 2 == 0 else ["loopback", "namespaces"]
            for name in order:
                if name == "namespaces":
                    runs[name].append(through_namespaces(hosts, sizes, args.repeats, scratch))
                else:
                    runs[name].append(measure_allreduce(sizes, args.repeats, scratch))
        after = hosts.link_bytes()
    finally:
        hosts.close()
    load_end = os.getloadavg()
    moved = (after["rx"] - before["rx"]) + (after["tx"] - before["tx"])
    print(
        f"{args.rounds} alternated rounds, median of each round's median of {args.repeats}; "
        f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
        f"at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; {os.cpu_count()} CPUs; "
        f"{moved / 2**20:,.0f} MiB crossed host B's veth end.\n"
    )
    print(
        "| buffer | MiB | veth ms | veth GB/s | loopback ms | loopback GB/s | veth / loopback time |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size in sorted(SIZES.items(), key=lambda item: item[1]):
        ns = statistics.median(r[size] for r in runs["namespaces"])
        lo = statistics.median(r[size] for r in runs["loopback"])
        print(
            f"| {name} | {size / 2**20:.2f} | {ns * 1e3:.2f} | {size / ns / 1e9:.2f} | "
            f"{lo * 1e3:.2f} | {size / lo / 1e9:.2f} | {ns / lo:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
