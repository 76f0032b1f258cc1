"""The worker's step against mlx-lm's and torch + PEFT's, on SmolLM2-135M at 4 x 256.

    flock /work/locks/bench.lock .venv/bin/python -m bench.trainer_step_peers \
        [--cases lora:chat,lora:all,qlora:chat,dora:chat,full:chat] [--steps 4] [--rounds 2]
        [--out FILE]

One case is a method and a kind of data: `chat` (system, user and assistant turns,
only the assistant's tokens trained, about half of each record) or `all` (every
token trained). Per case, one process (OpenBLAS preloaded, as a worker) holds two
copies of SmolLM2 (float32; the shipped 4-bit model for QLoRA): one trains with
the worker's own `Trainer` step, the other with the body of mlx-lm's `train()`
(its compiled step and `default_loss`, which computes every position's logits
whatever the mask); they alternate step by step, order flipped every step, on
the same token batches. Then torch 2.13 + PEFT (the bench-only environment
/work/benchenv, `bench/peers_torch.py`) trains the same batches, right after,
in its own process (threads: the machine's cores). LoRA rank 8, alpha 16, every
linear of every block, AdamW lr 1e-4 (bias-corrected on torch's side and ours),
float32. Prints a Markdown section; tokens/s counts every token of the batch
(prompt too), as mlx-lm counts.
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

WARMUP = 2
BATCH, SEQ, RANK = 4, 256, 8
TORCH_PYTHON = Path("/work/benchenv/bin/python")
GEMM_PEAK_GFLOPS = 175.0  # float32 OpenBLAS peak measured on this machine (issue 12)


def child(config_path: str, steps: int, batches_out: str, with_peer: bool = True) -> dict:
    import io
    import time
    from functools import partial

    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx import nn
    from mlx.utils import tree_map
    from mlx_lm.tuner.trainer import default_loss
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

    config = load(config_path)
    hp = config.hyperparameters
    loaded, _, _ = setup_model(config)
    data = load_dataset(config.train_path, loaded.tokenizer, config.loss_masking, hp.max_seq_length)
    events = EventWriter(None, echo=None)
    batches = TrainBatches(data, hp.batch_size, hp.seed, hp.max_seq_length)
    trainer = Trainer(
        config,
        loaded.model,
        build_optimizer(hp, hp.max_steps),
        batches,
        None,
        hp.max_steps,
        events,
        ControlReader(io.BytesIO()),
        World(),
        WandbLogger(config, events, enabled=False),
        {},
        checkpoint.TrainState(),
    )
    from tunewire.trainer.worker.logprobs import output_head

    trainer.optimizer.init(trainer.model.trainable_parameters())  # as Trainer.run does
    output_head(trainer.model)
    our_step, our_state = trainer._build_step()
    trainer.model.train()

    # The batches our side will see, in order, for mlx-lm and torch to see too.
    order = TrainBatches(data, hp.batch_size, hp.seed, hp.max_seq_length)
    planned = [order.next() for _ in range(steps + WARMUP)]
    np.savez(
        batches_out,
        tokens=np.stack([b.tokens for b in planned]),
        mask=np.stack([b.mask for b in planned]),
    )

    if not with_peer:
        return _ours_only(trainer, our_step, our_state, planned, steps, blas_in_use())
    # mlx-lm: the same model and adapters, and the body of tuner/trainer.py's train().
    model, _ = load_model(Path(config.model))
    model.set_dtype(mx.float32)
    mx.random.seed(hp.seed)
    if config.method == "full":
        model.unfreeze()
    else:
        model.freeze()
        keys = sorted(
            n
            for n, m in model.layers[0].named_modules()
            if isinstance(m, (nn.Linear, nn.QuantizedLinear))
        )
        params = {"rank": RANK, "scale": 2.0, "dropout": 0.0, "keys": keys}
        linear_to_lora_layers(model, len(model.layers), params, use_dora=config.method == "dora")
    optimizer = optim.AdamW(learning_rate=hp.learning_rate, weight_decay=hp.weight_decay)
    loss_value_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, lengths, prev_grad, do_update):
        (lvalue, toks), grad = loss_value_and_grad(model, batch, lengths)
        if prev_grad is not None:
            grad = tree_map(lambda x, y: x + y, grad, prev_grad)
        if do_update:
            optimizer.update(model, grad)
            grad = None
        return lvalue, toks, grad

    model.train()
    optimizer.init(model.trainable_parameters())
    totals = {"losses": mx.array(0.0), "n_tokens": mx.array(0)}
    peer_batches = iter(planned)

    def mlx_lm_step():
        b = next(peer_batches)
        # mlx-lm's (offset, length) per row: every token from the first trained one.
        rows = []
        for tok, m in zip(b.tokens, b.mask):
            trained = np.nonzero(m)[0]
            start = int(trained[0]) if len(trained) else 0
            rows.append([start, int((tok != 0).sum())])
        lvalue, toks, grad = step(mx.array(b.tokens), mx.array(rows), None, True)
        totals["losses"] += lvalue
        totals["n_tokens"] += toks
        mx.eval(state, totals["losses"], totals["n_tokens"], grad)

    def our_step_once():
        trainer._train_step(our_step, our_state)

    times: dict[str, list[float]] = {"tunewire": [], "mlx-lm": []}
    peaks: dict[str, int] = {"tunewire": 0, "mlx-lm": 0}
    for i in range(steps + WARMUP):
        sides = (("tunewire", our_step_once), ("mlx-lm", mlx_lm_step))
        for name, fn in sides if i % 2 == 0 else tuple(reversed(sides)):
            mx.reset_peak_memory()
            tic = time.perf_counter()
            fn()
            if i >= WARMUP:
                times[name].append(time.perf_counter() - tic)
                peaks[name] = max(peaks[name], int(mx.get_peak_memory()))
    tokens = [int((b.tokens != 0).sum()) for b in planned[WARMUP:]]
    trained = [int(b.mask.sum()) for b in planned[WARMUP:]]
    return {
        "blas": blas_in_use(),
        "times": times,
        "peaks": peaks,
        "tokens": tokens,
        "trained": trained,
    }


def _ours_only(trainer, our_step, our_state, planned, steps: int, blas: str) -> dict:
    """The worker's step alone (QLoRA: mlx-lm's side runs mlx's CPU quantized_matmul, at
    about 1.7 GFLOP/s some 5 minutes a step at 4 x 256, so it is not run)."""
    import time

    import mlx.core as mx

    times, peak = [], 0
    for i in range(steps + WARMUP):
        mx.reset_peak_memory()
        tic = time.perf_counter()
        trainer._train_step(our_step, our_state)
        if i >= WARMUP:
            times.append(time.perf_counter() - tic)
            peak = max(peak, int(mx.get_peak_memory()))
    return {
        "blas": blas,
        "times": {"tunewire": times, "mlx-lm": []},
        "peaks": {"tunewire": peak, "mlx-lm": 0},
        "tokens": [int((b.tokens != 0).sum()) for b in planned[WARMUP:]],
        "trained": [int(b.mask.sum()) for b in planned[WARMUP:]],
    }


def case_config(method: str, kind: str, steps: int, scratch: Path) -> Path:
    from tunewire.models import smollm2

    words = 280 if kind == "chat" else 400
    raw = common.write_chat_data(scratch / "data" / f"chat{words}.jsonl", words=words)
    model = smollm2.ensure_smollm2(
        dtype=None if method == "qlora" else "float32", log=lambda _: None
    )
    job_dir = Path(tempfile.mkdtemp(prefix=f"{method}-{kind}-", dir=scratch))
    masking = "all_assistant_turns" if kind == "chat" else "all_tokens"
    common.worker_config(
        job_dir,
        model,
        common.canonical_data(raw),
        method,
        steps=steps + WARMUP,
        batch_size=BATCH,
        seq_length=SEQ,
        report_every=10**6,
        rank=RANK,
        loss_masking=masking,
    )
    return job_dir


def run_case(method: str, kind: str, steps: int, rounds: int, scratch: Path) -> dict:
    """`rounds` rounds of the MLX process (ours and mlx-lm's, step by step) and torch's process,
    their order flipped every round so that a change in the machine's load falls on both."""
    job_dir = case_config(method, kind, steps, scratch)
    batches = job_dir / "batches.npz"
    merged: dict = {}
    for r in range(rounds):
        sides = [lambda: _mlx_round(method, job_dir, batches, steps)]
        if method != "qlora":
            sides.append(lambda: run_torch(method, kind, batches))
        if r % 2 == 1:  # round 0 runs MLX first: torch reads the batches it writes
            sides.reverse()
        outcomes = [side() for side in sides]
        mlx_side = next(o for o in outcomes if o and "peaks" in o)
        torch_side = next((o for o in outcomes if o is not mlx_side), None)
        _merge(merged, mlx_side, torch_side)
    return merged


def _mlx_round(method: str, job_dir: Path, batches: Path, steps: int) -> dict:
    argv = [common.PYTHON, "-m", "bench.trainer_step_peers", "--child", str(job_dir / CONFIG_FILE)]
    argv += ["--steps", str(steps), "--batches", str(batches)]
    if method == "qlora":
        argv.append("--no-peer")
    done = subprocess.run(
        argv, cwd=common.REPO, env=common.bench_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{method} child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["blas"] != "openblas":
        raise SystemExit(f"the child ran with {result['blas']} BLAS, not OpenBLAS")
    return result


def _merge(merged: dict, mlx_side: dict, torch_side: dict | None) -> None:
    if not merged:
        merged.update(mlx_side, torch=torch_side)
        return
    for name in ("tunewire", "mlx-lm"):
        merged["times"][name] += mlx_side["times"][name]
        merged["peaks"][name] = max(merged["peaks"][name], mlx_side["peaks"][name])
    merged["tokens"] += mlx_side["tokens"]
    merged["trained"] += mlx_side["trained"]
    if torch_side and torch_side.get("times") and merged.get("torch", {}).get("times"):
        merged["torch"]["times"] += torch_side["times"]


def run_torch(method: str, kind: str, batches: Path) -> dict | None:
    from tunewire.models import smollm2

    if not TORCH_PYTHON.exists():
        return None
    model = smollm2.ensure_smollm2(dtype="float32", log=lambda _: None)
    argv = [str(TORCH_PYTHON), str(common.REPO / "bench" / "peers_torch.py"), str(model)]
    argv += [method, str(batches), str(WARMUP), str(RANK)]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parameters_of(method: str) -> float:
    return 134.5e6  # SmolLM2-135M (tied head); FLOPs: 6N per token full, ~4N adapters


def report(args, results: dict, load_at_start: float) -> str:
    rows = []
    for case, r in results.items():
        method, kind = case.split(":")
        tok = statistics.mean(r["tokens"])
        share = sum(r["trained"]) / sum(r["tokens"])
        ours = statistics.median(r["times"]["tunewire"])
        peer = statistics.median(r["times"]["mlx-lm"]) if r["times"]["mlx-lm"] else None
        torch = r.get("torch") or {}
        torch_s = statistics.median(torch["times"]) if torch.get("times") else None
        flop_per_token = (6 if method == "full" else 4) * parameters_of(method)
        mfu = tok * flop_per_token / ours / (GEMM_PEAK_GFLOPS * 1e9)
        rows.append(
            [
                f"{method}, {kind}",
                f"{share:.0%}",
                f"{tok / peer:.1f}" if peer else "not run",
                f"{tok / ours:.1f}",
                f"{tok / torch_s:.1f}"
                if torch_s
                else (torch.get("error", "n/a")[:40] if torch else "n/a"),
                f"**{peer / ours:.2f}**" if peer else "n/a",
                f"**{torch_s / ours:.2f}**" if torch_s else "n/a",
                f"{common.gib(r['peaks']['mlx-lm']) if peer else 'n/a'} / "
                f"{common.gib(r['peaks']['tunewire'])}",
                f"{mfu:.0%}",
            ]
        )
    command = (
        "flock /work/locks/bench.lock .venv/bin/python -m bench.trainer_step_peers "
        f"--cases {args.cases} --steps {args.steps} --rounds {args.rounds}"
    )
    return "\n".join(
        [
            "## Trainer: the step against mlx-lm and torch + PEFT on SmolLM2-135M (4 x 256)",
            "",
            f"Command: `{command}` ({common.machine_line(load_at_start)}; load average at the end "
            f"{os.getloadavg()[0]:.1f}).",
            "",
            (
                f"Per case, {args.rounds} rounds; in each, one process alternates the worker's `Trainer` "
                "step with mlx-lm's `train()` step, step by step, on the same batches "
                f"({WARMUP} warm-up steps each dropped), and torch 2.13 + PEFT trains the same "
                "batches in its own process, before or after (the order flips every round). tokens/s: every token of "
                "the batch over the step's median time. MFU: (4 x parameters, 6 x for full) FLOP per "
                f"token over the measured float32 GEMM peak ({GEMM_PEAK_GFLOPS:.0f} GFLOP/s). Peak: MLX "
                "peak memory during the measured steps."
            ),
            "",
            common.table(
                [
                    "method, data",
                    "trained share",
                    "mlx-lm tok/s",
                    "tunewire tok/s",
                    "torch+PEFT tok/s",
                    "vs mlx-lm",
                    "vs torch",
                    "peak mlx-lm / tunewire",
                    "tunewire MFU",
                ],
                rows,
            ),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="lora:chat,lora:all,qlora:chat,dora:chat,full:chat")
    parser.add_argument("--steps", type=int, default=4, help="measured steps per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds per case")
    parser.add_argument("--out", help="also write the Markdown section to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--batches", help=argparse.SUPPRESS)
    parser.add_argument("--no-peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.batches, not args.no_peer)))
        return 0
    load_at_start = os.getloadavg()[0]
    scratch = common.scratch_dir("trainer_step_peers")
    results = {}
    for case in args.cases.split(","):
        method, kind = case.split(":")
        results[case] = run_case(method, kind, args.steps, args.rounds, scratch)
        print(f"  {case}: done {json.dumps(results[case])[:300]}", file=sys.stderr, flush=True)
        common.emit(report(args, results, load_at_start), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
