"""OpenBLAS in the training worker: its LoRA tokens/s with OpenBLAS preloaded and without.

    .venv/bin/python -m bench.trainer_openblas [--models tiny,small] [--rounds 2] [--out FILE]

Starts `python -m tunewire.trainer.worker` the way the daemon does, once with
the environment `tunewire.trainer.processes.blas.worker_env` gives it (OpenBLAS in
LD_PRELOAD) and once with TUNEWIRE_OPENBLAS=0 (mlx's bundled BLAS), on the same
model, data and settings, alternating for a few rounds. Throughput is wall
time between the worker's own metrics reports after the first (the compile),
from the events' timestamps. Checks from /proc which BLAS each worker really
mapped. Prints a Markdown section for bench/RESULTS.md. Linux only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import common, processes


@dataclass(frozen=True)
class Setting:
    steps: int
    report_every: int
    batch_size: int = 4
    seq_length: int = 256


# Without OpenBLAS a step is tens of times slower: few steps, reported often.
SETTINGS = {
    "tiny": Setting(steps=12, report_every=2),
    "small": Setting(steps=4, report_every=1),
}


def run_worker(model: Path, data: Path, setting: Setting, openblas: bool, scratch: Path) -> dict:
    from tunewire.trainer.processes.blas import blas_in_use

    job_dir = Path(tempfile.mkdtemp(prefix="openblas-" if openblas else "reference-", dir=scratch))
    config = common.worker_config(
        job_dir,
        model,
        data,
        "lora",
        steps=setting.steps,
        batch_size=setting.batch_size,
        seq_length=setting.seq_length,
        report_every=setting.report_every,
    )
    worker = processes.WorkerProcess.start(config, common.bench_env(openblas=openblas))
    try:
        worker.metrics_until(setting.report_every, timeout=900)
        blas = blas_in_use(worker.proc.pid)
        worker.metrics_until(setting.steps, timeout=900)
    finally:
        worker.kill()  # the measured steps are done; skip saving the adapter
    reports = common.worker_reports(worker.metrics())
    return {
        "blas": blas,
        "intervals": common.interval_rates(reports, setting.report_every),
        "rate": common.steady_rate(reports, setting.report_every),
    }


def report(args, results: dict, load_at_start: float) -> str:
    rows = []
    for name, r in results.items():
        s: Setting = r["setting"]
        slow = [v for x in r["reference"] for v in x["intervals"]]
        fast = [v for x in r["openblas"] for v in x["intervals"]]
        rows.append(
            [
                f"{name} ({r['params'] / 1e6:.1f}M)",
                f"{s.batch_size}x{s.seq_length}",
                f"{len(r['openblas'])} x {s.steps - s.report_every}",
                f"{common.median(slow):,.0f} / {max(slow):,.0f}",
                f"{common.median(fast):,.0f} / {max(fast):,.0f}",
                f"**{common.median(fast) / common.median(slow):.1f}x**",
                f"{max(fast) / max(slow):.1f}x",
                (
                    f"{1000 * s.batch_size * s.seq_length / max(slow):,.0f} / "
                    f"{1000 * s.batch_size * s.seq_length / max(fast):,.0f}"
                ),
            ]
        )
    blas = {
        side: sorted({x["blas"] for r in results.values() for x in r[side]})
        for side in ("reference", "openblas")
    }
    command = (
        f".venv/bin/python -m bench.trainer_openblas --models {args.models} --rounds {args.rounds}"
    )
    return "\n".join(
        [
            "## Trainer: the worker with and without OpenBLAS",
            "",
            f"Command: `{command}` ({common.machine_line(load_at_start)}).",
            "",
            (
                "The training worker started as the daemon starts it, LoRA rank 8 on every linear layer, AdamW, "
                "float32; once with OpenBLAS preloaded (`worker_env`) and once with `TUNEWIRE_OPENBLAS=0` (mlx's "
                f"bundled BLAS), {args.rounds} alternating rounds. BLAS each worker mapped (from /proc): "
                f"{', '.join(blas['reference'])} without, {', '.join(blas['openblas'])} with. Tokens/s: wall time "
                "between the worker's metrics reports after the first (the compile); median and best interval "
                "over all rounds."
            ),
            "",
            common.table(
                [
                    "model",
                    "batch",
                    "runs x measured steps",
                    "bundled BLAS tokens/s (median / best)",
                    "OpenBLAS tokens/s (median / best)",
                    "speed-up (medians)",
                    "speed-up (bests)",
                    "ms/step bundled / OpenBLAS (best)",
                ],
                rows,
            ),
            "",
            (
                "Expectation: well over 10x once matmuls dominate the step. In the tiny model they do not: "
                "its step is mostly attention, element-wise ops and the loss, which run on mlx's single CPU thread "
                "whatever the BLAS."
            ),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="tiny,small", help=f"comma-separated: {', '.join(SETTINGS)}"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    parser.add_argument("--out", help="also write the Markdown section to this file")
    args = parser.parse_args()
    from tunewire.trainer.processes.blas import find_openblas

    if find_openblas({k: v for k, v in os.environ.items() if k != "TUNEWIRE_OPENBLAS"}) is None:
        print("no OpenBLAS to compare with on this machine (Linux with libopenblas only)")
        return 1
    load_at_start = os.getloadavg()[0]
    scratch = common.scratch_dir("trainer_openblas")
    data = common.canonical_data(common.write_chat_data(scratch / "data" / "chat.jsonl"))
    results = {}
    for name in args.models.split(","):
        if name not in SETTINGS:
            raise SystemExit(
                f"--models: no setting for {name!r}; choose from {', '.join(SETTINGS)}"
            )
        setting, model = SETTINGS[name], common.model_dir(name)
        r = {
            "setting": setting,
            "params": common.parameter_count(name),
            "reference": [],
            "openblas": [],
        }
        for round_ in range(args.rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for openblas in order:
                result = run_worker(model, data, setting, openblas, scratch)
                r["openblas" if openblas else "reference"].append(result)
                print(
                    f"  {name} round {round_ + 1} {'openblas' if openblas else 'reference'} "
                    f"({result['blas']}): {result['rate'].tokens_per_second:,.0f} tokens/s",
                    file=sys.stderr,
                    flush=True,
                )
        results[name] = r
    common.emit(report(args, results, load_at_start), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
