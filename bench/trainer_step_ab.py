"""The worker's training step against mlx-lm's, alternated step by step in one process.

    .venv/bin/python -m bench.trainer_step_ab [--models tiny,small] [--steps 60] [--out FILE]

What the service-overhead benchmark (trainer_overhead) cannot separate from
machine noise on a shared host, this measures directly: one process (OpenBLAS
preloaded, as a worker) holds two identical LoRA models; one trains with the
worker's own `Trainer` step (`trainer/worker/loop.py`: batch, inputs, compiled
step, eval, as its loop runs them), the other with the step of mlx-lm's
`tuner/trainer.py` `train()` (its compiled step body, batch iterator and
accumulation, reproduced here because `train()` keeps them local). They
alternate one step at a time (the order flipped every step), so both see the
same machine. Times each step, warm-up steps dropped. Prints a Markdown
section. Uses the Trainer's private `_build_step`/`_train_step`: it measures
exactly what the loop calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import common
from tunewire.trainer.jobs.handoff import CONFIG_FILE

WARMUP = 5
BATCH, SEQ, RANK = 4, 256, 8


def child(config_path: str, steps: int) -> dict:
    import io
    import time
    from functools import partial

    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx import nn
    from mlx.nn.utils import average_gradients
    from mlx.utils import tree_map
    from mlx_lm.tuner.trainer import default_loss, iterate_batches
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    from tunewire.trainer.processes.blas import blas_in_use
    from tunewire.trainer.protocol.config import load
    from tunewire.trainer.worker import checkpoint
    from tunewire.trainer.worker.data import TrainBatches, load_dataset
    from tunewire.trainer.worker.distributed import World
    from tunewire.trainer.worker.events import ControlReader, EventWriter
    from tunewire.trainer.worker.loop import Trainer
    from tunewire.trainer.worker.model_setup import setup_model
    from tunewire.trainer.worker.optim import build_optimizer
    from tunewire.trainer.worker.wandb_log import WandbLogger

    # Ours: the worker's setup and Trainer, as run_job builds them.
    config = load(config_path)
    hp = config.hyperparameters
    loaded, _, _ = setup_model(config)
    data = load_dataset(config.train_path, loaded.tokenizer, config.loss_masking, hp.max_seq_length)
    events = EventWriter(None, echo=None)
    trainer = Trainer(
        config,
        loaded.model,
        build_optimizer(hp, hp.max_steps),
        TrainBatches(data, hp.batch_size, hp.seed, hp.max_seq_length),
        None,
        hp.max_steps,
        events,
        ControlReader(io.BytesIO()),
        World(),
        WandbLogger(config, events, enabled=False),
        {},
        checkpoint.TrainState(),
    )
    trainer.optimizer.init(trainer.model.trainable_parameters())  # as Trainer.run does
    our_step, our_state = trainer._build_step()
    trainer.model.train()

    # mlx-lm: the same model and adapters, and the body of tuner/trainer.py's train().
    model, _ = load_model(Path(config.model))
    model.set_dtype(mx.float32)
    keys = sorted(n for n, m in model.layers[0].named_modules() if isinstance(m, nn.Linear))
    mx.random.seed(hp.seed)
    model.freeze()
    linear_to_lora_layers(
        model, len(model.layers), {"rank": RANK, "scale": 2.0, "dropout": 0.0, "keys": keys}
    )
    optimizer = optim.AdamW(learning_rate=hp.learning_rate, weight_decay=hp.weight_decay)
    loss_value_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, prev_grad, do_update):
        (lvalue, toks), grad = loss_value_and_grad(model, *batch)
        if prev_grad is not None:
            grad = tree_map(lambda x, y: x + y, grad, prev_grad)
        if do_update:
            grad = average_gradients(grad)
            optimizer.update(model, grad)
            grad = None
        return lvalue, toks, grad

    model.train()
    batches = iterate_batches(
        [(r.tokens.tolist(), 0) for r in data.records], hp.batch_size, hp.max_seq_length, loop=True
    )
    totals = {"losses": 0, "n_tokens": 0}

    def mlx_lm_step():
        lvalue, toks, grad = step(next(batches), None, True)
        totals["losses"] += lvalue
        totals["n_tokens"] += toks
        mx.eval(state, totals["losses"], totals["n_tokens"], grad)

    def our_step_once():
        trainer._train_step(our_step, our_state)

    times = {"tunewire": [], "mlx-lm": []}
    for i in range(steps + WARMUP):
        order = (("tunewire", our_step_once), ("mlx-lm", mlx_lm_step))
        for name, fn in order if i % 2 == 0 else tuple(reversed(order)):
            tic = time.perf_counter()
            fn()
            if i >= WARMUP:
                times[name].append(time.perf_counter() - tic)
    return {"blas": blas_in_use(), "times": times}


def run_model(name: str, steps: int, scratch: Path) -> dict:
    raw = common.write_chat_data(scratch / "data" / "chat.jsonl")
    job_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    common.worker_config(
        job_dir,
        common.model_dir(name),
        common.canonical_data(raw),
        "lora",
        steps=steps + WARMUP,
        batch_size=BATCH,
        seq_length=SEQ,
        report_every=10**6,
        rank=RANK,
    )
    done = subprocess.run(
        [
            common.PYTHON,
            "-m",
            "bench.trainer_step_ab",
            "--child",
            str(job_dir / CONFIG_FILE),
            "--steps",
            str(steps),
        ],
        cwd=common.REPO,
        env=common.bench_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"step A/B child for {name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["blas"] != "openblas":
        raise SystemExit(f"the A/B child ran with {result['blas']} BLAS, not OpenBLAS")
    return result["times"]


def report(args, results: dict, load_at_start: float) -> str:
    rows = []
    for name, times in results.items():
        ours, peer = times["tunewire"], times["mlx-lm"]
        pairs = [b / a for a, b in zip(ours, peer)]
        rows.append(
            [
                f"{name} ({common.parameter_count(name) / 1e6:.1f}M)",
                str(len(ours)),
                f"{1000 * statistics.median(peer):.1f} / {1000 * min(peer):.1f}",
                f"{1000 * statistics.median(ours):.1f} / {1000 * min(ours):.1f}",
                f"**{statistics.median(peer) / statistics.median(ours):.3f}**",
                f"{min(peer) / min(ours):.3f}",
                f"{statistics.median(pairs):.3f}",
            ]
        )
    command = (
        f".venv/bin/python -m bench.trainer_step_ab --models {args.models} --steps {args.steps}"
    )
    return "\n".join(
        [
            "## Trainer: the worker's training step against mlx-lm's, in one process",
            "",
            f"Command: `{command}` ({common.machine_line(load_at_start)}).",
            "",
            (
                f"One process, OpenBLAS preloaded; two identical random models with LoRA rank {RANK} on every linear "
                f"layer, batch {BATCH} x {SEQ} tokens, AdamW. Each step of the worker's `Trainer` (next batch, its "
                "inputs, the compiled step, eval) alternates with one step of mlx-lm's `train()` body (next batch "
                f"from `iterate_batches`, its compiled step, eval), order flipped every step; {WARMUP} warm-up "
                "steps each dropped. Ratio: mlx-lm's step time over ours, so above 1 means the worker is faster."
            ),
            "",
            common.table(
                [
                    "model",
                    "steps each",
                    "mlx-lm ms/step (median / min)",
                    "tunewire ms/step (median / min)",
                    "tokens/s ratio (medians)",
                    "ratio (mins)",
                    "median of step-pair ratios",
                ],
                rows,
            ),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small", help="comma-separated: tiny, small, ...")
    parser.add_argument("--steps", type=int, default=60, help="measured steps per side")
    parser.add_argument("--out", help="also write the Markdown section to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return 0
    load_at_start = os.getloadavg()[0]
    scratch = common.scratch_dir("trainer_step_ab")
    results = {}
    for name in args.models.split(","):
        results[name] = run_model(name, args.steps, scratch)
        print(f"  {name}: done", file=sys.stderr, flush=True)
    common.emit(report(args, results, load_at_start), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
