"""mlx side of the real-model tests, run as a subprocess: prints one JSON line.

python probe.py generate PROMPT MAX_TOKENS MODEL[::ADAPTER] ...
    greedy replies of each model (with an adapter) to PROMPT as a chat turn
python probe.py fused PROMPT MAX_TOKENS MODEL ADAPTER
    the greedy reply of mlx-lm's fused model: each adapted layer's fuse(dequantize=True)
"""

import json
import sys

from mlx_lm import generate, load


def replies(prompt: str, max_tokens: int, models: list[str]) -> dict:
    out = {}
    for spec in models:
        path, _, adapter = spec.partition("::")
        model, tokenizer = load(path, adapter_path=adapter or None)
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        out[spec] = generate(model, tokenizer, text, max_tokens=max_tokens)
    return out


def fused_reply(prompt: str, max_tokens: int, model_path: str, adapter: str) -> dict:
    from mlx.utils import tree_unflatten

    model, tokenizer = load(model_path, adapter_path=adapter)
    fused = [(n, m.fuse(dequantize=True)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    model.update_modules(tree_unflatten(fused))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return {"reply": generate(model, tokenizer, text, max_tokens=max_tokens), "fused": len(fused)}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "generate":
        print(json.dumps(replies(args[0], int(args[1]), args[2:])))
    elif command == "fused":
        print(json.dumps(fused_reply(args[0], int(args[1]), args[2], args[3])))
    else:
        sys.exit(f"unknown probe command {command!r}")
