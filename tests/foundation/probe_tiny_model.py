"""Run by test_tiny_model.py in a subprocess, so that the pytest process never
imports mlx: loads a model directory with mlx-lm and prints what it saw as
one JSON line.

    python probe_tiny_model.py MODEL_DIR [BFLOAT16_MODEL_DIR]
"""

import json
import math
import sys

import mlx.core as mx
import mlx_lm
from mlx import nn
from mlx.utils import tree_flatten

model_dir = sys.argv[1]
model, tokenizer = mlx_lm.load(model_dir)

messages = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What does LoRA train?"},
]
prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)


# Random weights stop at an eos token now and then; the greedy sampler with a
# logits processor banning eos makes the length certain.
def ban_eos(tokens, logits):
    return logits.at[:, list(tokenizer.eos_token_ids)].add(-1e9)


generated_ids = []
for response in mlx_lm.stream_generate(
    model, tokenizer, prompt_ids, max_tokens=12, logits_processors=[ban_eos]
):
    generated_ids.append(response.token)
text = mlx_lm.generate(model, tokenizer, prompt, max_tokens=8, verbose=False)

batch = mx.array([prompt_ids])
logits = model(batch)
loss = nn.losses.cross_entropy(logits[:, :-1], batch[:, 1:]).mean().item()

report = {
    "prompt": prompt,
    "prompt_ids": prompt_ids,
    "generated_ids": generated_ids,
    "generated_text_type": type(text).__name__,
    "eos_token_ids": sorted(tokenizer.eos_token_ids),
    "eos_token": tokenizer.eos_token,
    "vocab_size": logits.shape[-1],
    "logits_dtype": str(logits.dtype),
    "initial_loss": loss,
    "log_vocab": math.log(logits.shape[-1]),
    "roundtrip": tokenizer.decode(tokenizer.encode("naïve 日本語 🙂 x**2 <|im_end|>")),
}

if len(sys.argv) > 2:
    # The bfloat16 build must hold the float32 weights rounded as mlx rounds them.
    bf16_model, _ = mlx_lm.load(sys.argv[2])
    full = dict(tree_flatten(model.parameters()))
    half = dict(tree_flatten(bf16_model.parameters()))
    report["bfloat16_dtypes"] = sorted({str(v.dtype) for v in half.values()})
    report["bfloat16_mismatches"] = [
        name
        for name, value in full.items()
        if not mx.array_equal(value.astype(mx.bfloat16), half[name]).item()
    ]

print(json.dumps(report))
