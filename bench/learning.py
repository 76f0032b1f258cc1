"""Measured learning on the real model: does SmolLM2 pick up the demo's sign-off, and how well?

    flock /work/locks/bench.lock .venv/bin/python -m bench.learning [--steps 30] [--out bench/RESULTS.md] [--quick]

Trains SmolLM2-135M-Instruct on examples/signoff_train.jsonl (the demo's data
and settings: 30 steps of batch 4, learning rate 1e-3, rank 8, alpha 16, the
last 8 blocks, AdamW) with tunewire's worker as LoRA (float32 base), QLoRA on
the GGUF's own 4-bit layers as they are, and DoRA (float32 base), and with
mlx-lm's own `mlx_lm lora` (LoRA, float32 base, same data, seed and settings).
Each adapter, and the base, is then scored by one scorer (bench/learning_score.py)
on the 16 held-out chats of examples/signoff_heldout.jsonl: the fraction of
greedy replies (48 tokens) that sign off, and the validation loss (mean cross-
entropy over the assistant tokens the worker trains on).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from bench.common import PYTHON, bench_env, canonical_data, machine_line, scratch_dir, table
from bench.common import worker_config as bench_worker_config
from bench.processes import WorkerProcess
from tunewire.cli import demo, signoff
from tunewire.models import smollm2

S = demo.DEFAULTS
SCORE = Path(__file__).with_name("learning_score.py")
# mlx-lm's own loss (mlx_lm.tuner.trainer.default_loss) on its own collation of a train.jsonl
# that holds just tunewire's first batch. LoRA B starts at zero, so the first step's loss is
# the base model's: no adapter is needed to compute it.
MLX_LM_FIRST_BATCH = """
import json, sys, types
import mlx.core as mx
from mlx_lm import load
from mlx_lm.tuner.datasets import CacheDataset, load_dataset
from mlx_lm.tuner.trainer import default_loss, iterate_batches
model, tokenizer = load(sys.argv[1])
args = types.SimpleNamespace(data=sys.argv[2], train=True, test=False, mask_prompt=True,
                             hf_dataset=False)
train, _, _ = load_dataset(args, tokenizer)
batch, lengths = next(iterate_batches(CacheDataset(train), int(sys.argv[3]), int(sys.argv[4])))
loss, tokens = default_loss(model, batch, lengths)
# default_loss's mask ends at `steps <= length`: target index `length` is the padding after
# the record, one more target per record than the record holds. Without it:
inside, inside_tokens = default_loss(model, batch, lengths - mx.array([0, 1]))
print(json.dumps({"loss": loss.item(), "tokens": tokens.item(),
                  "loss_without_pad_target": inside.item(), "tokens_without": inside_tokens.item()}))
"""


def tunewire_first_batch(model: Path, train: Path) -> list[dict]:
    """The records of tunewire's first batch (its worker's own batching, seed and epoch 0)."""
    from transformers import AutoTokenizer  # the tokenizer mlx-lm wraps; no mlx here

    from tunewire.trainer.worker.data import TrainBatches, load_dataset

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    dataset = load_dataset(train, tokenizer, "all_assistant_turns", S.max_seq_length)
    batches = TrainBatches(dataset, S.batch_size, S.seed, S.max_seq_length)
    group = batches.groups[batches.epoch_order(0)[0]]
    lines = [json.loads(x) for x in train.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [{"messages": lines[i]["messages"]} for i in group]


def mlx_lm_first_batch_loss(model: Path, train: Path, work: Path) -> dict:
    data = work / "mlx-lm-first-batch"
    data.mkdir(parents=True, exist_ok=True)
    records = tunewire_first_batch(model, train)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shutil.copyfile(signoff.HELD_OUT_FILE, data / "valid.jsonl")
    argv = [PYTHON, "-c", MLX_LM_FIRST_BATCH, str(model), str(data)]
    argv += [str(S.batch_size), str(S.max_seq_length)]
    done = subprocess.run(argv, capture_output=True, text=True, env=bench_env(), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"mlx-lm first-batch loss failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tunewire_run(name: str, model: Path, train: Path, steps: int, work: Path) -> dict:
    method = {"lora": "lora", "qlora": "qlora", "dora": "dora"}[name]
    config = bench_worker_config(
        work / f"job-{name}",
        model,
        train,
        method,
        steps=steps,
        batch_size=S.batch_size,
        seq_length=S.max_seq_length,
        report_every=1,
        rank=S.rank,
        lora={"alpha": S.alpha, "num_layers": S.num_layers},
        hyperparameters={"learning_rate": S.learning_rate, "seed": S.seed},
        loss_masking="all_assistant_turns",
    )
    started = time.monotonic()
    worker = WorkerProcess.start(config, bench_env())
    status = worker.finish(timeout=1800)
    if status != 0:
        raise RuntimeError(f"{name}: worker exited {status}:\n{worker.log_tail()}")
    losses = [m.loss for m in worker.metrics()]
    return {
        "adapter": str(Path(config.job_dir) / "adapters"),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "seconds": time.monotonic() - started,
    }


def mlx_lm_run(model: Path, steps: int, work: Path) -> dict:
    """`mlx_lm lora` on the same chats (train.jsonl, valid.jsonl) and settings."""
    data = work / "mlx-lm-data"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(signoff.TRAIN_FILE, data / "train.jsonl")
    shutil.copyfile(signoff.HELD_OUT_FILE, data / "valid.jsonl")
    adapter = work / "mlx-lm-adapter"
    config = {
        "model": str(model),
        "train": True,
        "data": str(data),
        "fine_tune_type": "lora",
        "iters": steps,
        "batch_size": S.batch_size,
        "learning_rate": S.learning_rate,
        "num_layers": S.num_layers,
        "max_seq_length": S.max_seq_length,
        "seed": S.seed,
        "mask_prompt": True,
        "steps_per_report": 1,
        "steps_per_eval": 10**6,
        "val_batches": 1,
        "save_every": 10**6,
        "adapter_path": str(adapter),
        "optimizer": "adamw",
        # tunewire's AdamW: weight decay 0.01, bias-corrected (PyTorch's), no clipping.
        "optimizer_config": {"adamw": {"weight_decay": 0.01, "bias_correction": True}},
        "lora_parameters": {"rank": S.rank, "scale": S.alpha / S.rank, "dropout": 0.0},
    }
    path = work / "mlx-lm.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    done = subprocess.run(
        [PYTHON, "-m", "mlx_lm", "lora", "-c", str(path)],
        capture_output=True,
        text=True,
        env=bench_env(),
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mlx_lm lora failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    # mlx-lm prints a table: "  ITER  TRAIN_LOSS ▼  TOK/S  TOKENS" (validation rows say "val").
    plain = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    losses = [float(m.group(2)) for m in re.finditer(r"^\s*(\d+)\s+([0-9.]+)\s", plain, re.M)]
    if not losses:
        raise RuntimeError(f"no train loss in mlx_lm lora's output:\n{plain[-2000:]}")
    return {
        "adapter": str(adapter),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "seconds": time.monotonic() - started,
    }


def score(model: Path, adapter: str | None, held_out: Path) -> dict:
    argv = [PYTHON, str(SCORE), str(model), adapter or "", str(held_out)]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=bench_env(), timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"scoring failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_batch_text(first: dict, tunewire_first: float) -> str:
    first_gap = abs(first["loss_without_pad_target"] - tunewire_first)
    return (
        "Same first batch: mlx-lm's own loss (`mlx_lm.tuner.trainer.default_loss` on its "
        "own `iterate_batches` collation, `mask_prompt`) of the 4 records tunewire's worker "
        f"trains on first: {first['loss']:.4f} over {first['tokens']} targets as mlx-lm "
        "masks them; its mask (`steps <= length`) also takes the padding target after each "
        "record (one per record, token 0). Without that target: "
        f"{first['loss_without_pad_target']:.6f} over {first['tokens_without']} targets, "
        f"against tunewire LoRA's first loss {tunewire_first:.6f}: |difference| "
        f"{first_gap:.2e} ({'within' if first_gap <= 1e-3 else 'NOT within'} 1e-3). "
        "mlx_lm lora's own first loss in the table is on another first batch: it visits "
        "the same length-sorted groups in `np.random.permutation` order, tunewire in "
        "`default_rng([seed, epoch])` order (resumable from (epoch, index))."
    )


def first_batch_only(args, work: Path, model: Path, train: Path) -> None:
    """`--first-batch-only`: one tunewire LoRA step and mlx-lm's loss of the same batch
    (seconds, nothing timed: it needs no bench lock)."""
    load = os.getloadavg()[0]
    tunewire_first = tunewire_run("lora", model, train, 1, work)["first_loss"]
    first = mlx_lm_first_batch_loss(model, train, work)
    section = "\n".join(
        [
            "## Learning: mlx-lm's first loss on tunewire's first batch (issue 11)",
            "",
            "Command: `.venv/bin/python -m bench.learning --first-batch-only --out "
            f"bench/RESULTS.md` ({time.strftime('%Y-%m-%d %H:%M')}; {machine_line(load)}; "
            "SmolLM2-135M-Instruct float32, the demo's data, seed, batch "
            f"{S.batch_size}, max length {S.max_seq_length}; LoRA B starts at zero, so the "
            "first step's loss is the base model's on that batch)",
            "",
            first_batch_text(first, tunewire_first),
            "",
        ]
    )
    print(section, flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=S.steps)
    parser.add_argument("--out", default=None, help="append the section to this Markdown file")
    parser.add_argument("--quick", action="store_true", help="2 held-out chats (a smoke run)")
    parser.add_argument(
        "--first-batch-only",
        action="store_true",
        help="only mlx-lm's and tunewire's first-step loss on one identical batch",
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    work = scratch_dir("learning")
    float_model = smollm2.ensure_smollm2(dtype="float32", log=lambda _: None)
    q4_model = smollm2.ensure_smollm2(log=lambda _: None)
    shutil.copyfile(signoff.TRAIN_FILE, work / "signoff_train.jsonl")
    train = canonical_data(work / "signoff_train.jsonl")
    if args.first_batch_only:
        first_batch_only(args, work, float_model, train)
        return

    runs = {
        "base (no adapter)": (float_model, {"adapter": None}),
    }
    for name, model in (("lora", float_model), ("qlora", q4_model), ("dora", float_model)):
        runs[f"tunewire {name.upper()}"] = (
            model,
            tunewire_run(name, model, train, args.steps, work),
        )
        print(name, runs[f"tunewire {name.upper()}"][1], flush=True)
    runs["mlx_lm lora (LoRA)"] = (float_model, mlx_lm_run(float_model, args.steps, work))
    print("mlx-lm", runs["mlx_lm lora (LoRA)"][1], flush=True)
    first = mlx_lm_first_batch_loss(float_model, train, work)
    print("mlx-lm on tunewire's first batch", first, flush=True)
    tunewire_first = runs["tunewire LORA"][1]["first_loss"]

    rows = []
    held_out = work / "held_out.jsonl"
    lines = signoff.HELD_OUT_FILE.read_text(encoding="utf-8").splitlines()
    held_out.write_text("\n".join(lines[:2] if args.quick else lines) + "\n", encoding="utf-8")
    base_scores = score(q4_model, None, held_out)  # the 4-bit base: what QLoRA starts from
    for label, (model, run) in runs.items():
        scored = score(model, run["adapter"], held_out)
        print(label, scored, flush=True)
        rows.append(
            [
                label,
                "4-bit GGUF layers" if model == q4_model else "float32",
                f"{run['first_loss']:.4f}" if "first_loss" in run else "",
                f"{run['last_loss']:.4f}" if "last_loss" in run else "",
                f"{run['seconds']:.0f}" if "seconds" in run else "",
                f"{scored['signed']}/{scored['prompts']}",
                f"{scored['validation_loss']:.4f}",
            ]
        )
    rows.insert(
        1,
        [
            "base, 4-bit (no adapter)",
            "4-bit GGUF layers",
            "",
            "",
            "",
            f"{base_scores['signed']}/{base_scores['prompts']}",
            f"{base_scores['validation_loss']:.4f}",
        ],
    )
    header = [
        "run",
        "base weights",
        "first train loss",
        "last train loss",
        "train s",
        "held-out replies signed off",
        "held-out validation loss",
    ]
    section = "\n".join(
        [
            "## Learning: SmolLM2-135M-Instruct learns the demo's sign-off (issue 11, item 5)",
            "",
            f"Command: `flock /work/locks/bench.lock .venv/bin/python -m bench.learning --steps "
            f"{args.steps} --out bench/RESULTS.md` ({time.strftime('%Y-%m-%d %H:%M')}; "
            f"{machine_line(load)}, load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end)",
            "",
            f"Settings (the demo's, `tunewire/cli/demo.py` DemoSettings): {args.steps} steps of "
            f"batch {S.batch_size}, learning rate {S.learning_rate:g} constant, AdamW (weight "
            f"decay 0.01, bias-corrected), rank {S.rank}, alpha {S.alpha:g} (scale "
            f"{S.alpha / S.rank:g}), last {S.num_layers} blocks, seed {S.seed}, max length "
            f"{S.max_seq_length}; loss on the assistant turns (mlx-lm: --mask-prompt, the same "
            "tokens for these one-answer chats). Scored on 16 held-out chats: greedy replies of "
            "48 tokens containing the sign-off, and validation loss over the assistant tokens.",
            "",
            table(header, rows, "lllrrrr"),
            "",
            first_batch_text(first, tunewire_first),
            "",
        ]
    )
    print(section, flush=True)
    if args.out:  # appended: RESULTS.md holds every benchmark's section
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + section)


if __name__ == "__main__":
    main()
