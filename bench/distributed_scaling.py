"""Data-parallel ranks on one host: tokens/s of 1 rank against 2 (ring backend over loopback),
and what a gradient all-reduce costs.

    .venv/bin/python -m bench.distributed_scaling [--methods lora,full] [--steps 12] [--rounds 1] [--out FILE]

Each job runs the training worker on the `small` model (4.1M parameters) with
a global batch of 4 x 256 tokens: as 1 rank, and as 2 ranks started from
`tunewire.trainer.processes.launch.rank_commands` (what the daemon runs; each
rank gets half of every batch and gradients are averaged with
`mx.distributed` over TCP on 127.0.0.1). Two ways to give the ranks the two
CPUs: as the daemon starts them (every rank's OpenBLAS may use both CPUs),
and with OPENBLAS_NUM_THREADS=1 per rank. Throughput: whole-job tokens/s from
rank 0's metrics (wall time between reports after the first). All-reduce:
the worker's own `all_reduce_seconds_per_step` (a twin all-reduce of a
gradient-sized tree timed on report steps), and a separate measurement of
`mx.distributed.all_sum` over the same ring at several sizes (median of
repeats, ranks lined up by a barrier before each). Prints a Markdown section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common, processes

MODEL = "small"
BATCH, SEQ = 4, 256
# Bytes of float32 gradients all-reduced per step: this model's LoRA and FULL, and
# Qwen2.5-0.5B's LoRA (rank 8, every linear layer: 4,399,104 parameters) as a bigger case.
ALLREDUCE_SIZES = {
    "small LoRA": None,
    "small FULL": None,
    "Qwen2.5-0.5B LoRA r8": 4_399_104 * 4,
    "64 MiB": 64 << 20,
}
VARIANTS = (
    ("1 rank", 1, None),
    ("2 ranks, BLAS threads as the daemon starts them", 2, None),
    ("2 ranks, OPENBLAS_NUM_THREADS=1 each", 2, 1),
)


def run_job(method: str, world: int, threads: int | None, data: Path, args, scratch: Path) -> dict:
    from tunewire.trainer.jobs.handoff import CONFIG_FILE
    from tunewire.trainer.processes.launch import rank_commands, worker_argv

    job_dir = Path(tempfile.mkdtemp(prefix=f"{method}-{world}-", dir=scratch))
    config = common.worker_config(
        job_dir,
        common.model_dir(MODEL),
        data,
        method,
        steps=args.steps,
        batch_size=BATCH,
        seq_length=SEQ,
        report_every=args.report_every,
        world_size=world,
    )
    commands = rank_commands(
        config.distributed,
        job_dir,
        worker_argv(job_dir / CONFIG_FILE, python=common.PYTHON),
        base_env=common.bench_env(threads=threads),
    )
    (argv0, env0), others = commands[0], commands[1:]
    rank0 = processes.WorkerProcess(argv0, env0, job_dir)
    ranks = []
    for rank, (argv, env) in enumerate(others, start=1):
        with open(job_dir / f"train.rank{rank}.log", "ab") as log:
            ranks.append(
                subprocess.Popen(
                    argv,
                    cwd=job_dir,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        rank0.metrics_until(args.steps, timeout=1800)
    finally:
        rank0.kill()  # measured; skip the adapter and model saves
        for proc in ranks:
            proc.kill()
            proc.wait()
    metrics = rank0.metrics()
    reports = common.worker_reports(metrics)
    setup = rank0.setup()
    reduce_times = [m.all_reduce_seconds_per_step for m in metrics if m.step > args.report_every]
    return {
        "world": setup.world_size,
        "trainable": setup.lora_details.trainable_parameters,
        "intervals": common.interval_rates(reports, args.report_every),
        "rate": common.steady_rate(reports, args.report_every),
        "all_reduce": common.median(reduce_times) if reduce_times else 0.0,
    }


# ---- all_sum over the ring, on its own -----------------------------------------------------


def allreduce_child(sizes: list[int], repeats: int) -> dict:
    """Runs in each of the 2 ranks: median seconds of all_sum per size (float32 elements)."""
    import mlx.core as mx

    group = mx.distributed.init(strict=True, backend="ring")
    barrier = mx.array(1.0)
    out = {}
    for size in sizes:
        x = mx.zeros((size // 4,), mx.float32)
        mx.eval(x)
        times = []
        for i in range(repeats + 1):
            mx.eval(mx.distributed.all_sum(barrier, group=group))
            tic = time.perf_counter()
            mx.eval(mx.distributed.all_sum(x, group=group))
            if i:  # the first one sets up buffers
                times.append(time.perf_counter() - tic)
        out[str(size)] = sorted(times)[len(times) // 2]
    return {"rank": group.rank(), "seconds": out}


def measure_allreduce(sizes: list[int], repeats: int, scratch: Path) -> dict[int, float]:
    from tunewire.trainer.processes.launch import rank_commands
    from tunewire.trainer.protocol.config import DistributedSettings

    job_dir = Path(tempfile.mkdtemp(prefix="allreduce-", dir=scratch))
    argv = [
        common.PYTHON,
        "-m",
        "bench.distributed_scaling",
        "--allreduce-child",
        ",".join(map(str, sizes)),
        "--repeats",
        str(repeats),
    ]
    two_ranks = DistributedSettings(world_size=2, backend="ring", hosts=[])
    commands = rank_commands(two_ranks, job_dir, argv, base_env=common.bench_env())
    procs = [
        subprocess.Popen(
            rank_argv,
            cwd=common.REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank_argv, env in commands
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"all-reduce child failed:\n{err[-2000:]}")
    result = json.loads(outputs[0][0].strip().splitlines()[-1])
    return {int(k): v for k, v in result["seconds"].items()}


# ---- the report ------------------------------------------------------------------------------


def report(args, jobs: dict, allreduce: dict, sizes: dict, load_at_start: float) -> str:
    rows = []
    for method, by_variant in jobs.items():
        singles = [v for r in by_variant["1 rank"] for v in r["intervals"]]
        one, one_best = common.median(singles), max(singles)
        for name, _, _ in VARIANTS:
            runs = by_variant[name]
            values = [v for r in runs for v in r["intervals"]]
            step_ms = 1000 * BATCH * SEQ / common.median(values)
            reduce_ms = 1000 * common.median([r["all_reduce"] for r in runs])
            rows.append(
                [
                    method.upper(),
                    name,
                    f"{runs[0]['trainable']:,}",
                    f"{common.median(values):,.0f}",
                    f"{max(values):,.0f}",
                    f"{common.median(values) / one:.2f}x / {max(values) / one_best:.2f}x",
                    f"{step_ms:,.0f}",
                    f"{reduce_ms:.2f}" if runs[0]["world"] > 1 else "",
                    f"{100 * reduce_ms / step_ms:.1f}%" if runs[0]["world"] > 1 else "",
                ]
            )
    reduce_rows = [
        [
            name,
            f"{size / 2**20:.2f}",
            f"{1000 * allreduce[size]:.2f}",
            f"{size / allreduce[size] / 1e9:.2f}",
        ]
        for name, size in sorted(sizes.items(), key=lambda item: item[1])
    ]
    command = (
        f".venv/bin/python -m bench.distributed_scaling --methods {args.methods} --steps {args.steps} "
        f"--report-every {args.report_every} --rounds {args.rounds}"
    )
    return "\n".join(
        [
            "## Distributed: 1 rank against 2 ranks on one host (ring backend, loopback)",
            "",
            f"Command: `{command}` ({common.machine_line(load_at_start)}).",
            "",
            (
                f"The training worker on the `small` model ({common.parameter_count(MODEL) / 1e6:.1f}M parameters), "
                f"global batch {BATCH} x {SEQ} tokens, AdamW, float32, OpenBLAS preloaded; ranks started from "
                "`launch.rank_commands` as the daemon starts them (2 ranks: 2 x 256 tokens each, gradients averaged "
                f"over `mx.distributed`'s ring backend on 127.0.0.1). {args.steps} steps, the first "
                f"{args.report_every} a warm-up; {args.rounds} round(s), variants in turn. Tokens/s: the whole job's, "
                "median and best report interval. All-reduce ms/step: the worker's `all_reduce_seconds_per_step` "
                "(median over reports)."
            ),
            "",
            common.table(
                [
                    "method",
                    "ranks",
                    "trainable parameters",
                    "tokens/s (median)",
                    "tokens/s (best)",
                    "vs 1 rank (medians / bests)",
                    "ms/step",
                    "all-reduce ms/step (worker)",
                    "share of the step",
                ],
                rows,
            ),
            "",
            (
                "`mx.distributed.all_sum` of float32 zeros between the two ranks on their own (no training), median "
                f"of {args.repeats} after a barrier; bandwidth = bytes / time (a ring of 2 sends each rank's half out "
                "and gets the other half back: 2 x (N-1)/N = 1 x the buffer per rank):"
            ),
            "",
            common.table(["buffer", "MiB", "ms", "GB/s"], reduce_rows),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="lora,full", help="comma-separated: lora, full, dora")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--report-every", type=int, default=2, help="also the warm-up steps")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20, help="all_sum repeats per size")
    parser.add_argument("--out", help="also write the Markdown section to this file")
    parser.add_argument("--allreduce-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_child:
        print(
            json.dumps(
                allreduce_child([int(s) for s in args.allreduce_child.split(",")], args.repeats)
            )
        )
        return 0
    load_at_start = os.getloadavg()[0]
    scratch = common.scratch_dir("distributed_scaling")
    data = common.canonical_data(common.write_chat_data(scratch / "data" / "chat.jsonl"))
    methods = args.methods.split(",")
    jobs: dict = {m: {name: [] for name, _, _ in VARIANTS} for m in methods}
    for round_ in range(args.rounds):
        for method in methods:
            variants = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
            for name, world, threads in variants:
                result = run_job(method, world, threads, data, args, scratch)
                jobs[method][name].append(result)
                print(
                    f"  {method}, {name}: {result['rate'].tokens_per_second:,.0f} tokens/s, all-reduce "
                    f"{1000 * result['all_reduce']:.2f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    sizes = dict(ALLREDUCE_SIZES)
    for method in ("lora", "full"):
        if method in jobs:
            sizes[f"small {method.upper()}"] = jobs[method]["1 rank"][0]["trainable"] * 4
    sizes = {k: v for k, v in sizes.items() if v}
    allreduce = measure_allreduce(sorted(set(sizes.values())), args.repeats, scratch)
    common.emit(report(args, jobs, allreduce, sizes, load_at_start), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
