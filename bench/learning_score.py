"""The learning benchmark's scorer (mlx; run as a subprocess by bench/learning.py).

    python bench/learning_score.py MODEL ADAPTER|"" HELD_OUT.jsonl

Prints one JSON line: how many greedy replies (48 tokens) to the held-out
questions sign off, and the validation loss: mean cross-entropy over the
tokens the worker trains on (`trained_token_mask`, all assistant turns).
"""

import json
import sys

import mlx.core as mx
import mlx.nn as nn
from mlx_lm import generate, load

from tunewire.cli import signoff
from tunewire.datasets.api import trained_token_mask

MAX_TOKENS = 48


def main(model_path: str, adapter: str, held_out: str) -> dict:
    model, tokenizer = load(model_path, adapter_path=adapter or None)
    chats = [
        json.loads(line)["messages"] for line in open(held_out, encoding="utf-8") if line.strip()
    ]
    signed, total_loss, total_tokens, replies = 0, 0.0, 0, []
    for messages in chats:
        ids, mask = trained_token_mask(tokenizer._tokenizer, messages, "all_assistant_turns")
        tokens = mx.array(ids)[None]
        logits = model(tokens[:, :-1])
        targets = tokens[:, 1:]
        weights = mx.array(mask[1:], dtype=mx.float32)[None]
        losses = nn.losses.cross_entropy(logits.astype(mx.float32), targets) * weights
        total_loss += losses.sum().item()
        total_tokens += int(weights.sum().item())
        prompt = tokenizer.apply_chat_template(
            [m for m in messages if m["role"] != "assistant"],
            add_generation_prompt=True,
            tokenize=False,
        )
        reply = generate(model, tokenizer, prompt, max_tokens=MAX_TOKENS)
        replies.append(reply)
        signed += signoff.signs_off(reply)
    return {
        "signed": signed,
        "prompts": len(chats),
        "validation_loss": total_loss / total_tokens,
        "replies": replies[:3],
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
