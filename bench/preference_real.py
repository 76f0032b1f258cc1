"""DPO of SmolLM2-135M-Instruct on a preference it does not have: concise over verbose answers.

    .venv/bin/python -m bench.preference_real [--steps 30] [--out FILE]

The set (bench/data/concise_facts.py): a question, its one-sentence answer
(chosen) and the same answer padded with pleasantries (rejected); 40 pairs to
train, 12 held out. Before training: the base model's own preference on the
held-out pairs, by mean log-probability per reply token (summed log-probs would
favour any short reply), and its greedy replies. Then a DPO job (LoRA, the
worker run as the daemon runs it) with an evaluation at step 0 and at the end:
DPO's reward accuracy on the held-out pairs before (0.5: policy = reference)
and after, and the replies of the trained adapter to the same held-out prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path

from bench import common
from bench.data.concise_facts import CLOSINGS, FACTS, OPENINGS
from bench.processes import WorkerProcess

MODEL = "smollm2-135m-instruct-float32"
HELD_OUT = 12
SHOWN = 4


def pairs(facts, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "prompt": question,
            "chosen": answer,
            "rejected": f"{rng.choice(OPENINGS)} {answer} {rng.choice(CLOSINGS)}",
        }
        for question, answer in facts
    ]


def write(path: Path, records: list[dict]) -> Path:
    from tunewire.datasets.api import normalize_file

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = normalize_file(path, path.parent / (path.stem + "-canonical"))
    assert result.report.valid, result.report.errors[:3]
    return Path(result.train_path)


def base_preference(model_dir: Path, canonical: Path) -> float:
    """Share of pairs whose chosen reply the base model finds likelier per token."""
    import mlx.core as mx
    from mlx_lm import load

    from tunewire.trainer.worker.logprobs import trained_positions
    from tunewire.trainer.worker.preference_data import collate_pairs, load_pairs
    from tunewire.trainer.worker.preference_loss import reply_lengths, sequence_logps

    model, tokenizer = load(str(model_dir))
    data = load_pairs(canonical, tokenizer, 512)
    wins = 0
    for i in range(len(data)):
        batch = collate_pairs(data.records, [i], 0, 1, 512)
        tokens = mx.array(batch.tokens)
        positions = trained_positions(batch.tokens, batch.mask).arrays()
        per_token = sequence_logps(model, tokens, positions) / reply_lengths(tokens, positions)
        wins += per_token[0].item() > per_token[1].item()
    return wins / len(data)


def replies(model_dir: Path, adapter: str | None, prompts: list[str]) -> list[str]:
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(str(model_dir), adapter_path=adapter)
    out = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        reply = generate(model, tokenizer, text, max_tokens=60, sampler=make_sampler(temp=0.0))
        out.append(" ".join(reply.split()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    env = common.bench_env()
    if env.get("LD_PRELOAD") and os.environ.get("LD_PRELOAD") != env["LD_PRELOAD"]:
        # The scoring and sampling here run in this process: with OpenBLAS, as a worker.
        os.execve(
            sys.executable, [sys.executable, "-m", "bench.preference_real", *sys.argv[1:]], env
        )
    load_at_start = os.getloadavg()[0]
    home = Path(os.environ.get("TUNEWIRE_HOME", common.REPO / ".tunewire"))
    model_dir = home / "models" / MODEL
    scratch = common.scratch_dir("preference_real")
    train = write(scratch / "data" / "train.jsonl", pairs(FACTS[:-HELD_OUT], 0))
    held = write(scratch / "data" / "held.jsonl", pairs(FACTS[-HELD_OUT:], 1))
    held_prompts = [q for q, _ in FACTS[-HELD_OUT:]][:SHOWN]
    base_pref = base_preference(model_dir, held)
    before = replies(model_dir, None, held_prompts)

    from tunewire.client.spec import spec_from_dict
    from tunewire.trainer.jobs import handoff

    spec = spec_from_dict(
        {
            "model": str(model_dir),
            "dataset": {"path": str(train)},
            "method": "lora",
            "lora": {"rank": 8, "alpha": 16.0},
            "preference": {"method": "dpo", "beta": 0.1},
            "hyperparameters": {
                "max_steps": args.steps,
                "batch_size": 4,
                "learning_rate": args.learning_rate,
                "max_seq_length": 256,
                "seed": 0,
            },
            "evaluation": {"interval_steps": args.steps},
            "checkpointing": {"interval_steps": args.steps},
            "report_interval_steps": 5,
        }
    )
    job_dir = scratch / "job"
    job_dir.mkdir()
    config = handoff.config_from_spec(
        spec, job_id="dpo-real", job_dir=job_dir, train_path=train, validation_path=held
    )
    handoff.write_config(job_dir, config)
    worker = WorkerProcess.start(config, common.bench_env())
    if worker.finish(timeout=3600) != 0:
        raise SystemExit(f"the DPO job failed:\n{worker.log_tail()}")
    evaluations = [e for e in worker.events if e.kind == "evaluation"]
    done = next(e for e in worker.events if e.kind == "done")
    start, end = evaluations[0], evaluations[-1]
    after = replies(model_dir, done.artifacts.adapter_path, held_prompts)
    metrics = worker.metrics()
    seconds = [m for m in metrics if m.iterations_per_second]
    rows = [
        ["base model, mean log-prob per token", f"{base_pref:.2f}", "", ""],
        [
            "DPO reward accuracy, step 0",
            f"{start.preference.reward_accuracy:.2f}",
            f"{start.preference.reward_margin:.3f}",
            f"{start.validation_loss:.4f}",
        ],
        [
            f"DPO reward accuracy, step {end.step}",
            f"**{end.preference.reward_accuracy:.2f}**",
            f"{end.preference.reward_margin:.3f}",
            f"{end.validation_loss:.4f}",
        ],
    ]
    words = [len(r.split()) for r in before], [len(r.split()) for r in after]
    shown = "\n".join(f"| {q} | {b} | {a} |" for q, b, a in zip(held_prompts, before, after))
    command = f".venv/bin/python -m bench.preference_real --steps {args.steps} --learning-rate {args.learning_rate:g}"
    section = "\n".join(
        [
            "## Preference: DPO of SmolLM2-135M-Instruct, concise over verbose",
            "",
            f"Command: `{command}` ({common.machine_line(load_at_start)}).",
            "",
            f"{len(FACTS) - HELD_OUT} training pairs, {HELD_OUT} held out (other questions): a one-sentence "
            "answer chosen over the same answer padded with pleasantries (bench/data/concise_facts.py). "
            f"LoRA rank 8, beta 0.1, batch 4 pairs, learning rate {args.learning_rate:g}, {args.steps} steps "
            f"({statistics.median(1 / m.iterations_per_second for m in seconds):.1f} s a step). Held-out pairs:",
            "",
            common.table(["measure (held-out pairs)", "accuracy", "reward margin", "loss"], rows),
            "",
            f"Greedy replies to held-out questions, base → DPO adapter (mean {statistics.mean(words[0]):.0f} → "
            f"{statistics.mean(words[1]):.0f} words over the {SHOWN} shown):",
            "",
            "| question | base | after DPO |",
            "| --- | --- | --- |",
            shown,
        ]
    )
    common.emit(section, args.out)


if __name__ == "__main__":
    main()
