"""Peak memory of LoRA, QLoRA (4-bit) and DoRA against full fine-tuning, on the Qwen2.5-0.5B-shaped model.

    .venv/bin/python -m bench.trainer_memory [--methods full,lora,dora,qlora] [--batch 1] [--seq 128]
        [--steps 2] [--explain] [--keep-model] [--out FILE]

A method written with "+gc" (e.g. lora+gc) trains with gradient checkpointing of every
block, "+gcK" (e.g. lora+gc12) of the first K blocks; with
"+f32" (e.g. lora+f32) its frozen base is float32 instead of half precision.

Builds the random `qwen2.5-0.5b` preset (494M parameters, the real 151,936-token
vocabulary, tied embedding; bfloat16 on disk like the real checkpoint) in
bench/.work/, then runs the training worker once per method, one at a time, as
the daemon starts it, at the same batch and sequence length. Each worker is
stopped (SIGKILL) right after its metrics report for the last measured step,
before it saves anything, and reports: MLX peak memory (`peak_memory_bytes`
in its metrics: the process's whole life, loading included), its RSS at that
report, and its peak RSS (the kernel's, from wait4). Two steps at least: the
optimizer's moments are created lazily during the first update, so only from
the second step on are they resident while the forward and backward passes
run (for FULL that is 3.7 GiB the first step does not show).

--explain also runs each method through the worker's own setup and training
loop in-process, resetting MLX's peak counter between loading and training,
to split the peak into "loading the model" and "training", and prints the
sizes the peak is made of (weights, gradients, AdamW state, logits). Every
run also measures the output head alone (the hidden states times the
151,936-row embedding and the cross-entropy, forward and backward) at the
run's tokens per step, the part of the peak that grows with the vocabulary.
The model files (about 1 GB) are deleted at the end unless --keep-model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import common, processes
from tunewire.trainer.jobs.handoff import CONFIG_FILE

MODEL = "qwen2.5-0.5b"
METHODS = ("full", "lora", "dora", "qlora")
# A method with "+gc" trains with gradient checkpointing (hyperparameters.gradient_checkpointing),
# "+gcK" (e.g. lora+gc12) with the first K blocks checkpointed (gradient_checkpointing_blocks);
# with "+f32" its frozen base is float32 (hyperparameters.half_precision_frozen_weights false).
CHECKPOINTED = "+gc"
FLOAT32_BASE = "+f32"
TARGETS = {"qlora": 0.90, "lora": 0.80}  # issue 12, at 4 x 256


def run_worker(model: Path, data: Path, method: str, args, scratch: Path) -> dict:
    job_dir = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=scratch))
    # max_steps beyond the measured ones: no final checkpoint or artifact to wait for.
    config = common.worker_config(
        job_dir,
        model,
        data,
        base_method(method),
        steps=args.steps + 1000,
        batch_size=args.batch,
        seq_length=args.seq,
        report_every=1,
        hyperparameters=_hyperparameters(method),
    )
    worker = processes.WorkerProcess.start(config, common.bench_env())
    try:
        metrics = worker.metrics_until(args.steps, timeout=3600)
    finally:
        worker.kill()
    setup = worker.setup()
    last = metrics[-1]
    return {
        "peak": last.peak_memory_bytes,
        "rss": last.rss_bytes,
        "peak_rss": worker.peak_rss_bytes,
        "trainable": setup.lora_details.trainable_parameters,
        "total": setup.lora_details.total_parameters,
        "seconds_per_step": 1 / last.iterations_per_second if last.iterations_per_second else 0.0,
    }


def base_method(method: str) -> str:
    return method.split("+", 1)[0]


def _known_flag(flag: str) -> bool:
    blocks = flag[len(CHECKPOINTED) - 1 :]
    return flag == FLOAT32_BASE[1:] or (
        flag.startswith(CHECKPOINTED[1:]) and (not blocks or blocks.isdigit())
    )


def _hyperparameters(method: str) -> dict:
    flags = method.split("+")[1:]
    checkpointed = [f for f in flags if f.startswith(CHECKPOINTED[1:])]
    blocks = checkpointed[0][len(CHECKPOINTED) - 1 :] if checkpointed else ""
    return {
        "gradient_checkpointing": bool(checkpointed),
        "gradient_checkpointing_blocks": int(blocks or 0),
        "half_precision_frozen_weights": FLOAT32_BASE[1:] not in flags,
    }


# ---- --explain: the worker's own code in-process, with the peak counter reset after loading ----


def explain_child(config_path: str) -> dict:
    import io

    import mlx.core as mx

    from tunewire.trainer.protocol.config import load
    from tunewire.trainer.worker import checkpoint
    from tunewire.trainer.worker.data import TrainBatches, load_dataset
    from tunewire.trainer.worker.distributed import World
    from tunewire.trainer.worker.events import ControlReader, EventWriter
    from tunewire.trainer.worker.logprobs import output_head
    from tunewire.trainer.worker.loop import Trainer
    from tunewire.trainer.worker.model_setup import setup_model
    from tunewire.trainer.worker.optim import build_optimizer
    from tunewire.trainer.worker.wandb_log import WandbLogger

    class NoSaveTrainer(Trainer):
        """The worker's loop, minus checkpoint writes (a full model's would be 6 GB of disk)."""

        def _checkpoint(self) -> None:
            self.last_checkpoint_step = self.state.step

        def _train_step(self, step_fn, compiled_state) -> None:
            super()._train_step(step_fn, compiled_state)
            step_peaks.append(mx.get_peak_memory())
            mx.reset_peak_memory()

    config = load(config_path)
    hp = config.hyperparameters
    loaded, _setup, counts = setup_model(config)
    mx.eval(loaded.model.parameters())
    phases = {"load_peak": mx.get_peak_memory(), "weights": mx.get_active_memory()}
    mx.reset_peak_memory()
    # The split head is found (one forward pass outside the compiled step) before training.
    output_head(loaded.model)
    phases["head_probe_peak"] = mx.get_peak_memory()
    mx.reset_peak_memory()
    step_peaks: list[int] = []
    data = load_dataset(config.train_path, loaded.tokenizer, config.loss_masking, hp.max_seq_length)
    batches = TrainBatches(data, hp.batch_size, hp.seed, hp.max_seq_length)
    events = EventWriter(None, echo=None)
    trainer = NoSaveTrainer(
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
    trainer.run()
    phases["step_peaks"] = step_peaks
    phases["train_peak"] = max([phases["head_probe_peak"], *step_peaks])
    phases["trainable"] = counts.trainable
    return phases


def explain(model: Path, data: Path, method: str, args, scratch: Path) -> dict:
    job_dir = Path(tempfile.mkdtemp(prefix=f"explain-{method}-", dir=scratch))
    common.worker_config(
        job_dir,
        model,
        data,
        base_method(method),
        steps=args.steps,
        batch_size=args.batch,
        seq_length=args.seq,
        report_every=1,
        hyperparameters=_hyperparameters(method),
    )
    done = subprocess.run(
        [
            common.PYTHON,
            "-m",
            "bench.trainer_memory",
            "--explain-child",
            str(job_dir / CONFIG_FILE),
        ],
        cwd=common.REPO,
        env=common.bench_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"--explain for {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the loss head alone: logits over the whole vocabulary ----------------------------------


def loss_head_child(tokens: int) -> dict:
    """Peak memory of the output head and cross-entropy, forward and backward, at `tokens` tokens."""
    import mlx.core as mx
    from mlx import nn

    preset = common.preset_of(MODEL)
    weight = mx.random.normal((preset.vocab_size, preset.hidden_size)) * 0.02  # the tied embedding
    hidden = mx.random.normal((1, tokens, preset.hidden_size))
    targets = mx.random.randint(0, preset.vocab_size, (1, tokens))
    mx.eval(weight, hidden, targets)

    def loss(h):
        return nn.losses.cross_entropy(h @ weight.T, targets).astype(mx.float32).sum()

    before = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(mx.grad(loss)(hidden))
    return {
        "peak_above_inputs": mx.get_peak_memory() - before,
        "logits": tokens * preset.vocab_size * 4,
    }


def loss_head(tokens: int) -> dict:
    done = subprocess.run(
        [common.PYTHON, "-m", "bench.trainer_memory", "--loss-head-child", str(tokens)],
        cwd=common.REPO,
        env=common.bench_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"loss-head measurement failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the report ------------------------------------------------------------------------


def components(args) -> list[tuple[str, float]]:
    """The sizes a float32 training peak of this model is made of, from its shape."""
    preset = common.preset_of(MODEL)
    params = common.parameter_count(MODEL)
    embedding = preset.vocab_size * preset.hidden_size
    tokens = args.batch * args.seq
    return [
        ("all weights, float32", params * 4),
        ("of which the tied embedding / output head (151,936 x 896)", embedding * 4),
        ("gradients of all weights (FULL), float32", params * 4),
        ("AdamW's two moments for all weights (FULL), float32", 2 * params * 4),
        (
            f"logits, {args.batch} x {args.seq} x {preset.vocab_size:,} float32 (one copy)",
            tokens * preset.vocab_size * 4,
        ),
        (
            "all weights in 4 bits (group 64, a float32 scale and bias per group: 0.625 bytes a weight)",
            params * (0.5 + 8 / 64),
        ),
    ]


def reduction(value: float, full: float) -> str:
    return f"{100 * (1 - value / full):.0f}%"


def report(args, runs: dict, explained: dict, head: dict, load_at_start: float) -> str:
    full = runs.get("full")
    rows = []
    for method, r in runs.items():
        rows.append(
            [
                method.upper(),
                f"{r['trainable']:,}",
                common.gib(r["peak"]),
                reduction(r["peak"], full["peak"]) if full and method != "full" else "",
                common.gib(r["rss"]),
                common.gib(r["peak_rss"]),
                reduction(r["peak_rss"], full["peak_rss"]) if full and method != "full" else "",
                f"{r['seconds_per_step']:.1f}",
            ]
        )
    command = (
        f".venv/bin/python -m bench.trainer_memory --methods {args.methods} --batch {args.batch} "
        f"--seq {args.seq} --steps {args.steps} --dtype {args.dtype}"
        + (" --explain" if args.explain else "")
    )
    lines = [
        "## Trainer: peak memory of LoRA, QLoRA and DoRA against full fine-tuning",
        "",
        f"Command: `{command}` ({common.machine_line(load_at_start)}).",
        "",
        (
            f"The random Qwen2.5-0.5B-shaped model ({common.parameter_count(MODEL):,} parameters, vocabulary "
            f"151,936, tied embedding, {args.dtype} on disk), trained by the worker as the daemon starts it, in "
            f"float32 on the CPU, batch {args.batch} x {args.seq} tokens, AdamW; adapters rank 8 on every linear "
            "layer of all 24 blocks; QLoRA quantizes the base to 4 bits (group 64) at load. Each worker ran "
            f"{args.steps} step(s) (AdamW's moments exist only from the first update on) and was stopped "
            "after its report for the last one. MLX peak: the worker's "
            "`peak_memory_bytes` (process lifetime, loading included); RSS: its `rss_bytes` at that report; "
            "peak RSS: the kernel's maximum resident set (wait4)."
        ),
        "",
        common.table(
            [
                "method",
                "trainable parameters",
                "MLX peak GiB",
                "below FULL",
                "RSS GiB",
                "peak RSS GiB",
                "below FULL",
                "s/step",
            ],
            rows,
        ),
        "",
        "Targets (issue 12, at 4 x 256): QLoRA at least 90% below FULL, LoRA at least 80% below FULL."
        + (
            " +GC: the same method with gradient checkpointing (each block's activations recomputed "
            "in the backward pass instead of kept)."
            if any(CHECKPOINTED in m for m in runs)
            else ""
        )
        + (
            " +F32: the frozen base in float32 rather than half precision."
            if any(FLOAT32_BASE in m for m in runs)
            else ""
        ),
        "",
        (
            f"The output head alone (hidden states of {args.batch * args.seq:,} tokens times the 151,936 x 896 "
            "embedding, cross-entropy, forward and backward, in its own process): peak "
            f"{common.gib(head['peak_above_inputs'])} GiB above its inputs, "
            f"{head['peak_above_inputs'] / head['logits']:.1f} x one float32 copy of the logits "
            f"({common.gib(head['logits'])} GiB). Every method pays it."
        ),
    ]
    if explained:
        full_x = explained.get("full")
        rows = []
        for method, e in explained.items():
            rows.append(
                [
                    method.upper(),
                    common.gib(e["load_peak"]),
                    common.gib(e["weights"]),
                    common.gib(e["train_peak"]),
                    reduction(e["train_peak"], full_x["train_peak"])
                    if full_x and method != "full"
                    else "",
                    common.gib(e["train_peak"] - e["weights"]),
                ]
            )
        lines += [
            "",
            (
                "Where the peak comes from (`--explain`: the worker's own `setup_model` and training loop in "
                "one process, MLX's peak counter reset between loading and training; checkpoints skipped):"
            ),
            "",
            common.table(
                [
                    "method",
                    "peak while loading GiB",
                    "weights after setup GiB",
                    "peak while training GiB",
                    "training peak below FULL",
                    "training peak above weights GiB",
                ],
                rows,
            ),
            "",
            "Sizes from the model's shape:",
            "",
            common.table(
                ["what", "GiB"], [[name, common.gib(size)] for name, size in components(args)]
            ),
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated, FULL first for the ratios; add +gc for gradient checkpointing, "
        "+f32 for a float32 frozen base",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--seq", type=int, default=128, help="tokens per record (every record is this long)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=2,
        help="training steps per method (2 or more: see the module's docstring)",
    )
    parser.add_argument(
        "--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="of the model files"
    )
    parser.add_argument(
        "--explain", action="store_true", help="also split the peak into loading and training"
    )
    parser.add_argument(
        "--keep-model", action="store_true", help="keep the ~1-2 GB model in bench/.work/"
    )
    parser.add_argument("--out", help="also write the Markdown section to this file")
    parser.add_argument("--explain-child", help=argparse.SUPPRESS)
    parser.add_argument("--loss-head-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loss_head_child:
        print(json.dumps(loss_head_child(args.loss_head_child)))
        return 0
    if args.explain_child:
        print(json.dumps(explain_child(args.explain_child)))
        return 0
    methods = args.methods.split(",")
    unknown = [
        m
        for m in methods
        if base_method(m) not in METHODS or not all(_known_flag(f) for f in m.split("+")[1:])
    ]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown[0]!r}; choose from {', '.join(METHODS)}")
    load_at_start = os.getloadavg()[0]
    scratch = common.scratch_dir("trainer_memory")
    data = common.canonical_data(
        common.write_chat_data(scratch / "data" / "chat.jsonl", records=16)
    )
    model = common.model_dir(MODEL, args.dtype)
    try:
        runs, explained = {}, {}
        for method in methods:
            runs[method] = run_worker(model, data, method, args, scratch)
            print(
                f"  {method}: MLX peak {common.gib(runs[method]['peak'])} GiB, peak RSS "
                f"{common.gib(runs[method]['peak_rss'])} GiB",
                file=sys.stderr,
                flush=True,
            )
            if args.explain:
                explained[method] = explain(model, data, method, args, scratch)
                print(f"  {method} explained: {explained[method]}", file=sys.stderr, flush=True)
    finally:
        if not args.keep_model:
            common.remove_model(MODEL, args.dtype)
    head = loss_head(args.batch * args.seq)
    common.emit(report(args, runs, explained, head, load_at_start), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
