"""Service overhead: a LoRA job through the trainer daemon against mlx-lm's own trainer in a plain process.

    .venv/bin/python -m bench.trainer_overhead [--models tiny,small] [--rounds 4] [--out FILE]

For each model it starts `tunewire-trainer` in its own process, creates a
LoRA job over gRPC and reads its metrics events from a watch stream; the peer
is `mlx_lm.tuner.trainer.train` called directly in a plain Python process.
Both sides: the same model, the same token sequences (the job's data
normalized by the daemon's own function and tokenized with the worker's
loader), batch, sequence length, rank, layers and target modules, AdamW, and
the same environment (OpenBLAS preloaded by `worker_env`). Every record is
longer than the sequence length, so every step trains batch x seq_length tokens on
both sides. Throughput is tokens over wall time between consecutive reports
after the first (which ends the warm-up, the compile), from each side's own
report timestamps: everything each side does in between counts. Rounds
alternate the order (daemon first, then peer first) so machine noise hits
both alike; the medians and bests of the report intervals are compared, and
the CPU time per step of both sides. Prints a Markdown section for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import common, processes

TARGET = 0.97


@dataclass(frozen=True)
class Setting:
    steps: int
    report_every: int  # also the warm-up: the window starts at the first report
    batch_size: int = 4
    seq_length: int = 256
    rank: int = 8


SETTINGS = {
    "tiny": Setting(steps=70, report_every=10),
    "small": Setting(steps=25, report_every=5),
    "qwen2.5-0.5b": Setting(steps=6, report_every=2, batch_size=1, seq_length=128),
}


# ---- the peer: mlx-lm's trainer in a plain process ------------------------------------


def run_peer(spec: dict) -> dict:
    """Runs in the child process: mlx-lm's `train` with a callback that clocks its reports."""
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx import nn
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model, load_tokenizer

    from tunewire.trainer.processes.blas import blas_in_use
    from tunewire.trainer.worker.data import load_dataset

    path = Path(spec["model"])
    model, _ = load_model(path)
    model.set_dtype(mx.float32)  # what the worker does on the CPU
    data = load_dataset(spec["data"], load_tokenizer(path), "all", spec["seq_length"])
    dataset = [(record.tokens.tolist(), 0) for record in data.records]
    # The worker's default targets: every linear layer of a block.
    keys = sorted(name for name, m in model.layers[0].named_modules() if isinstance(m, nn.Linear))
    mx.random.seed(0)
    model.freeze()
    rank = spec["rank"]
    linear_to_lora_layers(
        model, len(model.layers), {"rank": rank, "scale": 2.0, "dropout": 0.0, "keys": keys}
    )
    optimizer = optim.AdamW(learning_rate=1e-4, weight_decay=0.01)
    reports = []

    class Clock(TrainingCallback):
        def on_train_loss_report(self, info):
            reports.append(
                {
                    "step": info["iteration"],
                    "time": time.time(),
                    "cpu": time.process_time(),
                    "tokens_per_second": info["tokens_per_second"],
                }
            )

    args = TrainingArgs(
        batch_size=spec["batch_size"],
        iters=spec["steps"],
        steps_per_report=spec["report_every"],
        steps_per_save=10**9,
        max_seq_length=spec["seq_length"],
        adapter_file=str(Path(spec["out_dir"]) / "adapters.safetensors"),
    )
    train(model, optimizer, dataset, None, args, training_callback=Clock())
    return {"reports": reports, "blas": blas_in_use(), "keys": keys}


def peer_round(model: Path, data: Path, setting: Setting, scratch: Path) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="peer-", dir=scratch))
    spec = {"model": str(model), "data": str(data), "out_dir": str(out_dir), **setting.__dict__}
    spec_path = out_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    with open(out_dir / "peer.log", "wb") as log:
        done = subprocess.run(
            [common.PYTHON, "-m", "bench.trainer_overhead", "--peer", str(spec_path)],
            cwd=common.REPO,
            env=common.bench_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"mlx-lm peer failed; see {out_dir / 'peer.log'}")
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    reports = [
        (r["step"], r["time"], r["step"] * setting.batch_size * setting.seq_length)
        for r in result["reports"]
    ]
    if result["blas"] != "openblas":
        raise SystemExit(f"the mlx-lm peer ran with {result['blas']} BLAS, not OpenBLAS")
    return {
        "rate": common.steady_rate(reports, setting.report_every),
        "intervals": common.interval_rates(reports, setting.report_every),
        "step_timed": _window_mean(
            [(r["step"], r["tokens_per_second"]) for r in result["reports"]], setting.report_every
        ),
        "cpu_per_step": _cpu_per_step(
            [(r["step"], r["cpu"]) for r in result["reports"]], setting.report_every
        ),
        "keys": result["keys"],
    }


# ---- our side: a job through the daemon ------------------------------------------------


async def daemon_round(
    daemon: processes.Daemon, raw_data: Path, model: Path, setting: Setting
) -> dict:

    from tunewire.v1 import training_job_pb2 as training_job_pb
    from tunewire.v1 import training_service_pb2 as training_service_pb
    from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

    spec = common.job_spec(
        model,
        raw_data,
        "lora",
        steps=setting.steps,
        batch_size=setting.batch_size,
        seq_length=setting.seq_length,
        report_every=setting.report_every,
        rank=setting.rank,
    )
    async with daemon.channel() as channel:
        stub = training_service_grpc.TrainingServiceStub(channel)
        job = (
            await stub.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
        ).job
        metrics, cpu, final = [], [], None
        async for message in stub.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job.id)
        ):
            event = message.event
            if event.HasField("training_metrics"):
                m = event.training_metrics
                metrics.append(
                    (m.step, processes.event_seconds(event), m.trained_tokens, m.tokens_per_second)
                )
                # CPU of the daemon and its worker, read as the report arrives.
                pids = [daemon.proc.pid, *processes.child_pids(daemon.proc.pid)]
                cpu.append((m.step, sum(processes.process_cpu_seconds(p) for p in pids)))
            if event.HasField("state_change"):
                final = event.state_change
        if final is None or final.state != training_job_pb.JOB_STATE_SUCCEEDED:
            raise SystemExit(f"job {job.id} did not succeed: {final}")
        job = (
            await stub.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
        ).job
    reports = [m[:3] for m in metrics]
    rate = common.steady_rate(reports, setting.report_every)
    expected = rate.steps * setting.batch_size * setting.seq_length
    if rate.tokens != expected:
        raise SystemExit(
            f"job {job.id} trained {rate.tokens} tokens in its window, expected {expected}"
        )
    return {
        "rate": rate,
        "intervals": common.interval_rates(reports, setting.report_every),
        "step_timed": _window_mean([(m[0], m[3]) for m in metrics], setting.report_every),
        "cpu_per_step": _cpu_per_step(cpu, setting.report_every),
        "keys": list(job.lora_details.target_modules),
    }


def _cpu_per_step(samples: list[tuple[int, float]], warmup_steps: int) -> float:
    """CPU seconds per step over the window (all threads of the process(es))."""
    window = [x for x in samples if x[0] >= warmup_steps]
    (s0, c0), (s1, c1) = window[0], window[-1]
    return (c1 - c0) / (s1 - s0)


def _window_mean(reports: list[tuple[int, float]], warmup_steps: int) -> float:
    """Mean of the per-interval tokens/s each trainer reports itself (step time only)."""
    values = [tps for step, tps in reports if step > warmup_steps]
    return sum(values) / len(values)


# ---- the run ------------------------------------------------------------------------


async def measure_model(
    name: str, daemon: processes.Daemon, raw: Path, canonical: Path, rounds: int, scratch: Path
) -> dict:
    setting = SETTINGS[name]
    model = common.model_dir(name)
    sides: dict[str, list[dict]] = {"daemon": [], "peer": []}
    for round_ in range(rounds):
        order = ("daemon", "peer") if round_ % 2 == 0 else ("peer", "daemon")
        for side in order:
            if side == "daemon":
                result = await daemon_round(daemon, raw, model, setting)
            else:
                result = await asyncio.to_thread(peer_round, model, canonical, setting, scratch)
            sides[side].append(result)
            print(
                f"  {name} round {round_ + 1} {side}: {result['rate'].tokens_per_second:,.0f} tokens/s",
                file=sys.stderr,
                flush=True,
            )
    if sorted(sides["daemon"][0]["keys"]) != sorted(f"{k}" for k in sides["peer"][0]["keys"]):
        raise SystemExit(
            f"target modules differ: {sides['daemon'][0]['keys']} vs {sides['peer'][0]['keys']}"
        )
    return {"setting": setting, "params": common.parameter_count(name), **sides}


def report(args, results: dict, load_at_start: float) -> str:
    rows = []
    for name, r in results.items():
        s: Setting = r["setting"]
        ours = [v for x in r["daemon"] for v in x["intervals"]]
        peer = [v for x in r["peer"] for v in x["intervals"]]
        runs = [
            x["rate"].tokens_per_second / y["rate"].tokens_per_second
            for x, y in zip(r["daemon"], r["peer"])
        ]
        step_ratio = common.median([x["step_timed"] for x in r["daemon"]]) / common.median(
            [x["step_timed"] for x in r["peer"]]
        )
        cpu_ours = common.median([x["cpu_per_step"] for x in r["daemon"]])
        cpu_peer = common.median([x["cpu_per_step"] for x in r["peer"]])
        rows.append(
            [
                f"{name} ({r['params'] / 1e6:.1f}M)",
                f"{s.batch_size}x{s.seq_length}, rank {s.rank}, {len(r['daemon'][0]['keys'])} modules",
                f"{len(r['daemon'])} x {s.steps - s.report_every}",
                f"{common.median(peer):,.0f} / {max(peer):,.0f}",
                f"{common.median(ours):,.0f} / {max(ours):,.0f}",
                f"**{common.median(ours) / common.median(peer):.3f}**",
                f"**{max(ours) / max(peer):.3f}**",
                ", ".join(f"{x:.2f}" for x in runs),
                f"{step_ratio:.3f}",
                f"{cpu_peer:.3f} / {cpu_ours:.3f} ({cpu_peer / cpu_ours:.3f})",
                f"{1000 * s.batch_size * s.seq_length / max(ours):,.0f}",
            ]
        )
    periods = ", ".join(f"{n}: {r['setting'].report_every} steps" for n, r in results.items())
    command = (
        f".venv/bin/python -m bench.trainer_overhead --models {args.models} --rounds {args.rounds}"
    )
    lines = [
        "## Trainer: service overhead (a job through the daemon vs mlx-lm's own trainer)",
        "",
        f"Command: `{command}` ({common.machine_line(load_at_start)}).",
        "",
        (
            "Ours: `tunewire-trainer` in its own process; the job created over gRPC, its metrics read from a "
            "WatchTrainingJob stream; the worker started by the daemon. Peer: `mlx_lm.tuner.trainer.train` "
            "called in a plain Python process. Same random model, the same token sequences, LoRA on every "
            "linear layer of every block, AdamW (lr 1e-4, weight decay 0.01), float32, OpenBLAS preloaded "
            "on both sides. Throughput: tokens over wall time between consecutive reports after the first "
            "(which ends the warm-up: the compile), from each side's own report timestamps; every interval "
            f"holds one report period ({periods}). {args.rounds} rounds, order alternated (daemon first, then the "
            "peer first). Other work on the shared machine only slows an interval down: the best interval "
            "of each side is its least disturbed speed, the median a typical one."
        ),
        "",
        common.table(
            [
                "model",
                "batch, LoRA",
                "runs x measured steps",
                "mlx-lm tokens/s (median / best interval)",
                "tunewire tokens/s (median / best)",
                "ratio of medians",
                "ratio of bests",
                "whole-run ratio per round",
                "step-timed ratio",
                "CPU s/step: mlx-lm / ours (ratio)",
                "ms/step (ours, best)",
            ],
            rows,
        ),
        "",
        (
            f"Target: ratio at least {TARGET}. The step-timed column compares the tokens/s each trainer "
            "reports itself (time inside the step only, mlx-lm's definition); the ratio column is wall time "
            "and so also counts batch preparation, reports and the daemon's share of the two CPUs. CPU s/step: "
            "CPU time (every thread) per measured step of the peer's process, and of our worker plus the "
            "daemon; a ratio above 1 means the service spends less CPU per step than the peer. It depends far "
            "less on what else runs on the machine than wall time does."
        ),
    ]
    return "\n".join(lines)


async def run(args) -> dict:
    scratch = common.scratch_dir("trainer_overhead")
    raw = common.write_chat_data(scratch / "data" / "chat.jsonl")
    canonical = common.canonical_data(raw)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=scratch))
    daemon = processes.Daemon(home, raw.parent)
    try:
        await daemon.ready()
        results = {}
        for name in args.models.split(","):
            if name not in SETTINGS:
                raise SystemExit(
                    f"--models: no setting for {name!r}; choose from {', '.join(SETTINGS)}"
                )
            results[name] = await measure_model(name, daemon, raw, canonical, args.rounds, scratch)
        return results
    finally:
        daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="tiny,small", help=f"comma-separated: {', '.join(SETTINGS)}"
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds per side, order alternated")
    parser.add_argument("--out", help="also write the Markdown section to this file")
    parser.add_argument("--peer", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        print(json.dumps(run_peer(json.loads(Path(args.peer).read_text()))))
        return 0
    load_at_start = os.getloadavg()[0]
    results = asyncio.run(run(args))
    common.emit(report(args, results, load_at_start), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
