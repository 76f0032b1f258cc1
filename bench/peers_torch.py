"""torch + PEFT's training step on the batches a tunewire benchmark saved (run with the
bench-only environment, never the product's):

    /work/benchenv/bin/python bench/peers_torch.py MODEL_DIR METHOD BATCHES.npz WARMUP RANK

LoRA/DoRA through PEFT (rank RANK, alpha 2 x RANK, every linear of every block), or
full fine-tuning; torch.optim.AdamW (lr 1e-4, weight decay 0.01), float32, the
loss over the batch mask's tokens. Prints one JSON line: step times after WARMUP.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    model_dir, method, batches, warmup, rank = sys.argv[1:6]
    warmup, rank = int(warmup), int(rank)
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    if method in ("lora", "dora"):
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.0,
            target_modules=targets,
            use_dora=method == "dora",
        )
        model = get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    data = np.load(batches)
    times, losses = [], []
    for i, (tokens, mask) in enumerate(zip(data["tokens"], data["mask"])):
        ids = torch.from_numpy(tokens.astype(np.int64))
        m = torch.from_numpy(mask[:, 1:].astype(np.float32))
        tic = time.perf_counter()
        logits = model(input_ids=ids[:, :-1]).logits
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
        )
        loss = (ce * m.reshape(-1)).sum() / m.sum().clamp(min=1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - tic)
        losses.append(float(loss))
    print(json.dumps({"times": times, "losses": losses, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
