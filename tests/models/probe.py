"""mlx side of the real-model tests, run as a subprocess: prints one JSON line.

python probe.py generate PROMPT MAX_TOKENS MODEL[::ADAPTER] ...
    greedy replies of each model (with an adapter) to PROMPT as a chat turn
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


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "generate":
        print(json.dumps(replies(args[0], int(args[1]), args[2:])))
    else:
        sys.exit(f"unknown probe command {command!r}")
