"""The training worker in a few variants of its settings or environment, alternated round by round.

    flock /work/locks/bench.lock .venv/bin/python -m bench.trainer_variants \
        [--variants half,f32] [--model smollm2|qwen2.5-0.5b] [--method lora] [--batch 4] [--seq 256]
        [--steps 4] [--rounds 2] [--out FILE]

Each variant is one way to run the same job (the names in VARIANTS): `half` and
`f32` keep the frozen base in half precision or float32
(hyperparameters.half_precision_frozen_weights); the others change the worker's
environment (a preloaded allocator, OpenBLAS's thread count). Each round starts
one worker per variant, as the daemon does (OpenBLAS preloaded), the order flipped
every round, on the same data: SmolLM2-135M-Instruct in float32 (`smollm2`) or the
random Qwen2.5-0.5B-shaped model (bfloat16 files, `qwen2.5-0.5b`), chat records whose
system and user turns are masked. A worker reports every step; its speed is the
batch's tokens (every one, as mlx-lm counts) over the median time between its reports
after WARMUP steps, its memory the MLX peak of its last report
and the kernel's peak RSS. The ratio column is the median over rounds of each
variant's speed over the first variant's in the same round.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench import common, processes

WARMUP = 2
# name -> (spec hyperparameters, environment changes)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "half": ({"half_precision_frozen_weights": True}, {}),
    "f32": ({"half_precision_frozen_weights": False}, {}),
    "glibc": ({}, {"TUNEWIRE_MALLOC": "0"}),
    "jemalloc": ({}, {"TUNEWIRE_MALLOC": "jemalloc"}),
    "tcmalloc": ({}, {"TUNEWIRE_MALLOC": "tcmalloc"}),
    "blas1": ({}, {"OPENBLAS_NUM_THREADS": "1"}),
    "blas2": ({}, {"OPENBLAS_NUM_THREADS": "2"}),
}


def model_path(name: str) -> Path:
    if name == "smollm2":
        from tunewire.models import smollm2

        return smollm2.ensure_smollm2(dtype="float32", log=lambda _: None)
    return common.model_dir(name, "bfloat16")


def run_variant(name: str, model: Path, data: Path, args, scratch: Path) -> dict:
    hyper, env_changes = VARIANTS[name]
    job_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    config = common.worker_config(
        job_dir,
        model,
        data,
        args.method,
        steps=WARMUP + args.steps + 1000,  # killed after the measured steps: nothing saved
        batch_size=args.batch,
        seq_length=args.seq,
        report_every=1,
        loss_masking="all_assistant_turns",
        hyperparameters=hyper,
    )
    env = common.bench_env(extra=env_changes)
    worker = processes.WorkerProcess.start(config, env)
    try:
        metrics = worker.metrics_until(WARMUP + args.steps, timeout=3600)
    finally:
        worker.kill()
    tokens = args.batch * args.seq  # every token of the batch, as mlx-lm counts
    step_seconds = [m.time for m in metrics if m.step >= WARMUP]
    seconds = [b - a for a, b in itertools.pairwise(step_seconds)]
    return {
        "tokens_per_second": tokens / statistics.median(seconds) if seconds else 0.0,
        "peak": metrics[-1].peak_memory_bytes,
        "peak_rss": worker.peak_rss_bytes,
    }


def report(args, rounds: list[dict], load_at_start: float) -> str:
    names = args.variants.split(",")
    first = names[0]
    rows = []
    for name in names:
        runs = [r[name] for r in rounds]
        ratios = [r[name]["tokens_per_second"] / r[first]["tokens_per_second"] for r in rounds]
        rows.append(
            [
                name,
                f"{statistics.median(r['tokens_per_second'] for r in runs):.1f}",
                " / ".join(f"{r['tokens_per_second']:.1f}" for r in runs),
                f"{statistics.median(ratios):.3f}",
                common.gib(max(r["peak"] for r in runs)),
                common.gib(max(r["peak_rss"] for r in runs)),
            ]
        )
    command = (
        f".venv/bin/python -m bench.trainer_variants --variants {args.variants} "
        f"--model {args.model} --method {args.method} --batch {args.batch} --seq {args.seq} "
        f"--steps {args.steps} --rounds {args.rounds}"
    )
    return "\n".join(
        [
            f"`{command}`",
            "",
            common.machine_line(load_at_start),
            "",
            common.table(
                [
                    "variant",
                    "tokens/s (median)",
                    "tokens/s per round",
                    f"× {first}",
                    "MLX peak GiB",
                    "peak RSS GiB",
                ],
                rows,
            ),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="half,f32", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--model", default="smollm2", help="smollm2 or a bench preset")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="measured steps per worker")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="also write the Markdown section to this file")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    load_at_start = os.getloadavg()[0]
    scratch = common.scratch_dir("trainer_variants")
    data = common.canonical_data(
        common.write_chat_data(scratch / "data" / "chat280.jsonl", words=280)
    )
    model = model_path(args.model)
    rounds = []
    for i in range(args.rounds):
        order = names if i % 2 == 0 else names[::-1]
        result = {}
        for name in order:
            result[name] = run_variant(name, model, data, args, scratch)
            print(f"  round {i + 1} {name}: {result[name]}", file=sys.stderr, flush=True)
        rounds.append(result)
    common.emit(report(args, rounds, load_at_start), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
