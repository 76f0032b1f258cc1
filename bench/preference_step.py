"""A DPO step against an SFT step on the same pairs: time (alternated in one process) and peak memory.

    .venv/bin/python -m bench.preference_step [--models small,smollm2] [--steps 20] [--out FILE]

Both train LoRA (rank 8, every linear layer) on the same synthetic pairs: the
SFT step takes a pair's two sequences (prompt + chosen, prompt + rejected) as
two records, so both steps see the same tokens, 2B rows a step, the replies
trained. The DPO step is the worker's `PreferenceTrainer` step (both sides in
one batch, the reference log-probs precomputed); the SFT step the worker's
`Trainer` step. One process holds both models and alternates them one step at
a time (the order flipped every step), so both see the same machine; warm-up
steps dropped. The reference pass (once per job) is timed on its own. Peak
memory: one child per kind, MLX's peak over the training steps after set-up.
Target (issue 14): the DPO step at most 2.2 x the SFT step for the two sequences.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import common

WARMUP = 3
PAIRS, SEQ, RANK = 2, 256, 8
MODELS = {"smollm2": "smollm2-135m-instruct-float32"}


def write_pairs(root: Path, pairs: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """Canonical pairs (DPO) and the same sequences as supervised records (SFT)."""
    rng = random.Random(seed)
    words = common._WORDS
    root.mkdir(parents=True, exist_ok=True)
    dpo, sft = root / "pairs.jsonl", root / "sft.jsonl"
    with open(dpo, "w") as d, open(sft, "w") as s:
        for n in range(pairs):
            prompt = [
                {"role": "system", "content": "You answer briefly.", "trainable": False},
                {
                    "role": "user",
                    "content": f"[{n}] " + " ".join(rng.choices(words, k=40)),
                    "trainable": False,
                },
            ]
            chosen = {
                "role": "assistant",
                "content": " ".join(rng.choices(words, k=50)),
                "trainable": True,
            }
            rejected = {
                "role": "assistant",
                "content": " ".join(rng.choices(words, k=50)),
                "trainable": True,
            }
            d.write(
                json.dumps({"messages": [*prompt, chosen], "rejected": rejected, "line": n + 1})
                + "\n"
            )
            for k, reply in enumerate((chosen, rejected)):
                s.write(json.dumps({"messages": [*prompt, reply], "line": 2 * n + k + 1}) + "\n")
    return dpo, sft


def child(sft_config: str, dpo_config: str, steps: int, only: str) -> dict:
    import io
    import time

    import mlx.core as mx

    from tunewire.trainer.processes.blas import blas_in_use
    from tunewire.trainer.protocol.config import load
    from tunewire.trainer.worker import checkpoint
    from tunewire.trainer.worker.data import TrainBatches, load_dataset
    from tunewire.trainer.worker.distributed import World
    from tunewire.trainer.worker.events import ControlReader, EventWriter
    from tunewire.trainer.worker.logprobs import output_head
    from tunewire.trainer.worker.loop import Trainer
    from tunewire.trainer.worker.model_setup import setup_model
    from tunewire.trainer.worker.optim import build_optimizer
    from tunewire.trainer.worker.preference_data import PairBatches, load_pairs
    from tunewire.trainer.worker.preference_loop import PreferenceTrainer
    from tunewire.trainer.worker.preference_reference import fill_reference
    from tunewire.trainer.worker.wandb_log import WandbLogger

    def trainer_of(path: str, kind: str):
        config = load(path)
        hp = config.hyperparameters
        loaded, _, _ = setup_model(config)
        events = EventWriter(None, echo=None)
        seconds = 0.0
        if kind == "dpo":
            data = load_pairs(config.train_path, loaded.tokenizer, hp.max_seq_length)
            tic = time.perf_counter()
            fill_reference(loaded.model, config, {"train": data}, True, False)
            seconds = time.perf_counter() - tic
            batches, cls = (
                PairBatches(data, hp.batch_size, hp.seed, hp.max_seq_length),
                PreferenceTrainer,
            )
        else:
            data = load_dataset(
                config.train_path, loaded.tokenizer, config.loss_masking, hp.max_seq_length
            )
            batches, cls = TrainBatches(data, hp.batch_size, hp.seed, hp.max_seq_length), Trainer
        trainer = cls(
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
        trainer.optimizer.init(trainer.model.trainable_parameters())  # as Trainer.run does
        output_head(trainer.model)
        step, state = trainer._build_step()
        trainer.model.train()
        return (lambda: trainer._train_step(step, state)), seconds, data.tokens

    kinds = {"sft": sft_config, "dpo": dpo_config}
    if only:
        run_step, _, _ = trainer_of(kinds[only], only)
        run_step()  # compile
        mx.reset_peak_memory()
        for _ in range(steps):
            run_step()
        return {"blas": blas_in_use(), "peak": int(mx.get_peak_memory())}
    steps_of, reference, tokens = {}, 0.0, {}
    for kind, path in kinds.items():
        steps_of[kind], seconds, tokens[kind] = trainer_of(path, kind)
        reference = max(reference, seconds)
    times = {"sft": [], "dpo": []}
    for i in range(steps + WARMUP):
        order = list(steps_of.items())
        for name, fn in order if i % 2 == 0 else reversed(order):
            tic = time.perf_counter()
            fn()
            if i >= WARMUP:
                times[name].append(time.perf_counter() - tic)
    return {"blas": blas_in_use(), "times": times, "reference_seconds": reference, "tokens": tokens}


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def model_path(name: str) -> Path:
    if name in MODELS:
        home = Path(os.environ.get("TUNEWIRE_HOME", common.REPO / ".tunewire"))
        return home / "models" / MODELS[name]
    return common.model_dir(name)


def configs(name: str, steps: int, scratch: Path) -> tuple[Path, Path]:
    dpo_data, sft_data = write_pairs(scratch / "data")
    out = []
    for kind, data, batch in (("sft", sft_data, 2 * PAIRS), ("dpo", dpo_data, PAIRS)):
        job_dir = Path(tempfile.mkdtemp(prefix=f"{name}-{kind}-", dir=scratch))
        extra = {"loss_masking": "all_assistant_turns"}
        if kind == "dpo":
            extra["preference"] = {"method": "dpo"}
        common.worker_config(
            job_dir,
            model_path(name),
            data,
            "lora",
            steps=steps + WARMUP + 1,
            batch_size=batch,
            seq_length=SEQ,
            report_every=10**6,
            rank=RANK,
            **extra,
        )
        out.append(job_dir / "worker_config.json")
    return out[0], out[1]


def run_child(sft: Path, dpo: Path, steps: int, only: str = "") -> dict:
    argv = [
        common.PYTHON,
        "-m",
        "bench.preference_step",
        "--child",
        str(sft),
        str(dpo),
        "--steps",
        str(steps),
    ]
    done = subprocess.run(
        argv + (["--only", only] if only else []),
        cwd=common.REPO,
        env=common.bench_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["blas"] != "openblas":
        raise SystemExit(f"the child ran with {result['blas']} BLAS, not OpenBLAS")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,smollm2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=2, default=None)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.steps, args.only)))
        return
    load_at_start = os.getloadavg()[0]
    scratch = common.scratch_dir("preference_step")
    rows = []
    for name in args.models.split(","):
        sft, dpo = configs(name, args.steps, scratch / name)
        timed = run_child(sft, dpo, args.steps)
        peaks = {
            kind: run_child(sft, dpo, max(3, args.steps // 4), kind)["peak"]
            for kind in ("sft", "dpo")
        }
        s, d = timed["times"]["sft"], timed["times"]["dpo"]
        ratio = statistics.median(d) / statistics.median(s)
        paired = statistics.median(b / a for a, b in zip(s, d))
        rows.append(
            [
                name,
                str(len(s)),
                f"{1000 * statistics.median(s):.0f} / {1000 * min(s):.0f}",
                f"{1000 * statistics.median(d):.0f} / {1000 * min(d):.0f}",
                f"**{ratio:.3f}**",
                f"{paired:.3f}",
                f"{timed['reference_seconds']:.2f} s ({timed['tokens']['dpo']:,} tokens)",
                mib(peaks["sft"]),
                mib(peaks["dpo"]),
                f"{peaks['dpo'] / peaks['sft']:.3f}",
                "yes" if ratio <= 2.2 else "**no**",
            ]
        )
    command = (
        f".venv/bin/python -m bench.preference_step --models {args.models} --steps {args.steps}"
    )
    section = "\n".join(
        [
            "## Preference: a DPO step against an SFT step on the same pairs",
            "",
            f"Command: `{command}` ({common.machine_line(load_at_start)}).",
            "",
            f"LoRA rank {RANK} on every linear layer, {PAIRS} pairs a step (SFT: the same {2 * PAIRS} "
            f"sequences as records), up to {SEQ} tokens, AdamW, replies trained; the two steps alternated "
            f"in one process, {WARMUP} warm-up steps dropped. DPO's reference log-probs are computed once "
            "per job (the reference pass column), not per step. Peak memory: MLX's peak over the training "
            "steps, one process per kind. Target: DPO ≤ 2.2 × SFT.",
            "",
            common.table(
                [
                    "model",
                    "steps",
                    "SFT ms (median / min)",
                    "DPO ms (median / min)",
                    "DPO / SFT",
                    "paired median",
                    "reference pass",
                    "SFT peak",
                    "DPO peak",
                    "peak ratio",
                    "≤ 2.2×",
                ],
                rows,
            ),
        ]
    )
    common.emit(section, args.out)


if __name__ == "__main__":
    main()
