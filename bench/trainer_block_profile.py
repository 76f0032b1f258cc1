"""Where one transformer block's time goes: SmolLM2-135M's block 0 as the worker trains it (LoRA).

    flock /work/locks/bench.lock .venv/bin/python -m bench.trainer_block_profile \
        [--batch 4] [--seq 256] [--repeats 5] [--out FILE]

Runs in one process with OpenBLAS preloaded (it re-executes itself with the worker's
environment). The model comes from the worker's own set-up (`setup_model`, LoRA rank
8 on every linear, the frozen base in bfloat16 as on the CPU by default), so the
block is exactly what a step runs. Each part is timed forward and backward (the
gradient of a random projection of its output, to the LoRA parameters and to its
input), compiled, the median of `--repeats` runs after one warm-up: the whole block,
then attention's core (`mx.fast.scaled_dot_product_attention`, causal), the two
RMSNorms (`mx.fast.rms_norm`), RoPE (`mx.fast.rope`), SwiGLU, the seven frozen
matmuls with their input gradients (float32, and widened from bfloat16), and the
seven LoRA side paths (x A B, with A and B's gradients). GFLOP/s counts matmul FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import common

RANK = 8


def child(batch: int, seq: int, repeats: int) -> dict:
    import time

    import mlx.core as mx
    from mlx import nn

    from tunewire.trainer.protocol.config import load
    from tunewire.trainer.worker.model_setup import setup_model

    scratch = Path(tempfile.mkdtemp(dir=common.scratch_dir("trainer_block_profile")))
    data = common.canonical_data(common.write_chat_data(scratch / "chat.jsonl", records=8))
    from tunewire.models import smollm2

    model_dir = smollm2.ensure_smollm2(dtype="float32", log=lambda _: None)
    common.worker_config(
        scratch / "job",
        model_dir,
        data,
        "lora",
        steps=1,
        batch_size=batch,
        seq_length=seq,
        report_every=1,
        rank=RANK,
    )
    loaded, _, _ = setup_model(load(str(scratch / "job" / "worker_config.json")))
    block = loaded.model.layers[0]
    attn, mlp = block.self_attn, block.mlp
    d = loaded.model.args.hidden_size
    x = mx.random.normal((batch, seq, d)) * 0.5
    mask = "causal"

    def timed(fn, *args) -> float:
        """Forward and backward of sum(fn(*args) * r), gradients to every argument."""
        out = fn(*args)
        r = mx.random.normal(out.shape)
        grad = mx.compile(mx.grad(lambda *a: (fn(*a) * r).sum(), argnums=tuple(range(len(args)))))
        mx.eval(grad(*args))
        times = []
        for _ in range(repeats):
            tic = time.perf_counter()
            mx.eval(grad(*args))
            times.append(time.perf_counter() - tic)
        return statistics.median(times)

    results: dict[str, dict] = {}

    def timed_block() -> float:
        """The block forward and backward, gradients to its LoRA parameters, compiled with
        the block's state as the worker's step is."""
        r = mx.random.normal(x.shape)
        vg = nn.value_and_grad(block, lambda x_: (block(x_, mask, None) * r).sum())
        step = mx.compile(vg, inputs=block.state, outputs=block.state)
        mx.eval(step(x))
        times = []
        for _ in range(repeats):
            tic = time.perf_counter()
            mx.eval(step(x))
            times.append(time.perf_counter() - tic)
        return statistics.median(times)

    n = batch * seq
    linears = {name: module for name, module in block.named_modules() if hasattr(module, "lora_a")}
    frozen_flops = sum(
        2 * n * m.linear.weight.shape[0] * m.linear.weight.shape[1] * 2 for m in linears.values()
    )  # forward and input gradient
    lora_flops = sum(
        2 * n * RANK * (m.lora_a.shape[0] + m.lora_b.shape[1]) * 3 for m in linears.values()
    )
    heads, head_dim = attn.n_heads, d // attn.n_heads
    attn_flops = 2 * 2 * batch * heads * seq * seq * head_dim * 3 // 2  # causal half, fwd+bwd 3x
    results["block (fwd+bwd)"] = {
        "s": timed_block(),
        "flop": frozen_flops + lora_flops + attn_flops,
    }

    q = mx.random.normal((batch, heads, seq, head_dim))
    kv = mx.random.normal((batch, attn.n_kv_heads, seq, head_dim))
    results["attention core (sdpa)"] = {
        "s": timed(
            lambda q_, k_, v_: mx.fast.scaled_dot_product_attention(
                q_, k_, v_, scale=attn.scale, mask="causal"
            ),
            q,
            kv,
            kv,
        ),
        "flop": attn_flops,
    }
    results["2 x rms_norm"] = {
        "s": 2 * timed(lambda x_: block.input_layernorm(x_), x),
        "flop": 0,
    }
    results["rope (q and k)"] = {
        "s": timed(lambda q_: attn.rope(q_), q) + timed(lambda k_: attn.rope(k_), kv),
        "flop": 0,
    }
    hidden = mlp.gate_proj.linear.weight.shape[0]
    g = mx.random.normal((batch, seq, hidden))
    results["swiglu"] = {"s": timed(lambda a, b: nn.silu(a) * b, g, g), "flop": 0}
    frozen_s, widened_s, lora_s = 0.0, 0.0, 0.0
    for m in linears.values():
        w = m.linear.weight
        w32 = w.astype(mx.float32)
        xin = mx.random.normal((batch, seq, w.shape[1]))
        frozen_s += timed(lambda x_, w_=w32: x_ @ mx.stop_gradient(w_).T, xin)
        widened_s += timed(lambda x_, linear=m.linear: linear(x_), xin)
        scale = m.scale
        lora_s += timed(lambda x_, a_, b_, s_=scale: (x_ @ a_) @ b_ * s_, xin, m.lora_a, m.lora_b)
    results["7 frozen matmuls, float32 weights"] = {"s": frozen_s, "flop": frozen_flops}
    results["7 frozen matmuls, widened from bfloat16"] = {"s": widened_s, "flop": frozen_flops}
    results["7 LoRA side paths"] = {"s": lora_s, "flop": lora_flops}
    return {"results": results, "blocks": len(loaded.model.layers)}


def report(args, out: dict, load_at_start: float) -> str:
    block = out["results"]["block (fwd+bwd)"]["s"]
    rows = []
    for name, r in out["results"].items():
        rate = f"{r['flop'] / r['s'] / 1e9:.0f}" if r["flop"] else ""
        rows.append([name, f"{r['s'] * 1e3:.1f}", f"{r['s'] / block:.0%}", rate])
    command = (
        f".venv/bin/python -m bench.trainer_block_profile --batch {args.batch} --seq {args.seq} "
        f"--repeats {args.repeats}"
    )
    return "\n".join(
        [
            f"`{command}`",
            "",
            common.machine_line(load_at_start),
            "",
            common.table(["part (forward + backward)", "ms", "of the block", "GFLOP/s"], rows),
            "",
            f"x {out['blocks']} blocks a step.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.batch, args.seq, args.repeats)))
        return 0
    load_at_start = os.getloadavg()[0]
    argv = [common.PYTHON, "-m", "bench.trainer_block_profile", "--child"]
    argv += ["--batch", str(args.batch), "--seq", str(args.seq), "--repeats", str(args.repeats)]
    done = subprocess.run(
        argv, cwd=common.REPO, env=common.bench_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the child failed:\n{done.stderr[-3000:]}")
    common.emit(
        report(args, json.loads(done.stdout.strip().splitlines()[-1]), load_at_start), args.out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
