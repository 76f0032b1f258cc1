"""The arithmetic behind docs/scaling.md: gradient bytes, ring all-reduce traffic and time, memory per rank.

    .venv/bin/python -m bench.distributed_paper [--rank 8] [--latency-us 50]

No measurement: it counts parameters from the models' shapes (Qwen2.5-0.5B and
Qwen2.5-7B), LoRA parameters on the usual target modules, and applies the
ring all-reduce cost model (each rank sends and receives 2(N-1)/N x S bytes
in 2(N-1) hops) to a few link speeds. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hidden // self.heads

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of every linear layer in one block."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def parameters(self) -> int:
        block = sum(a * b for a, b in self.linears().values())
        block += self.hidden + 2 * self.kv_dim  # q, k, v biases (Qwen2)
        block += 2 * self.hidden  # the two RMSNorm scales
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * block + embeddings + self.hidden

    def lora_parameters(self, rank: int, modules: tuple[str, ...]) -> int:
        """A (in x r) and B (r x out) on each listed module of every block."""
        return self.layers * sum(
            rank * (a + b) for m, (a, b) in self.linears().items() if m in modules
        )


QWEN_05B = Shape("Qwen2.5-0.5B", 896, 24, 14, 2, 4864, 151936, tied=True)
QWEN_7B = Shape("Qwen2.5-7B", 3584, 28, 28, 4, 18944, 152064, tied=False)
QV = ("q_proj", "v_proj")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Line rates in bytes/s; real TCP goodput is lower (often 60-90% of these).
LINKS = {
    "1 GbE": 1e9 / 8,
    "10 GbE": 10e9 / 8,
    "Thunderbolt 5 (80 Gb/s)": 80e9 / 8,
    "100 GbE": 100e9 / 8,
    "InfiniBand NDR (400 Gb/s)": 400e9 / 8,
}
RANKS = (2, 8, 64)
# Sustained training throughput, FLOP/s (assumptions, not measurements): an Apple
# M2 Ultra GPU under MLX, and an H100 SXM at about 40% of its bf16 dense peak.
DEVICES = {"M2 Ultra (~10 TFLOP/s)": 10e12, "H100 (~400 TFLOP/s)": 400e12}


def ring_bytes_per_rank(size: float, n: int) -> float:
    """Bytes each rank sends (and receives) in a ring all-reduce of `size` bytes."""
    return 2 * (n - 1) / n * size


def ring_seconds(size: float, n: int, bandwidth: float, latency: float) -> float:
    """2(N-1) hops, each moving size/N bytes and paying one latency."""
    return 2 * (n - 1) * (latency + size / n / bandwidth)


def human_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:,.1f} s"
    if s >= 1e-3:
        return f"{s * 1e3:,.1f} ms"
    return f"{s * 1e6:,.0f} us"


def gradient_cases(rank: int) -> list[tuple[str, int, int]]:
    """(case, parameters all-reduced, bytes per gradient element)."""
    return [
        (f"0.5B LoRA r{rank} q,v", QWEN_05B.lora_parameters(rank, QV), 4),
        (f"0.5B LoRA r{rank} all linear", QWEN_05B.lora_parameters(rank, ALL_LINEAR), 4),
        ("0.5B full, fp32 grads", QWEN_05B.parameters(), 4),
        ("0.5B full, bf16 grads", QWEN_05B.parameters(), 2),
        (f"7B LoRA r{rank} q,v", QWEN_7B.lora_parameters(rank, QV), 4),
        (f"7B LoRA r{rank} all linear", QWEN_7B.lora_parameters(rank, ALL_LINEAR), 4),
        ("7B full, fp32 grads", QWEN_7B.parameters(), 4),
        ("7B full, bf16 grads", QWEN_7B.parameters(), 2),
    ]


def step_flops(params: int, tokens: int, full: bool) -> float:
    """6 FLOPs a parameter a token for full training (forward 2, backward 4); LoRA skips the
    frozen weights' gradients (forward 2, input gradients 2) and its adapters are tiny."""
    return (6 if full else 4) * params * tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument(
        "--latency-us", type=float, default=50.0, help="per-hop latency of the ring (TCP)"
    )
    parser.add_argument("--tokens", type=int, default=8 * 2048, help="tokens per rank per step")
    parser.add_argument(
        "--ranks", type=int, default=8, help="N for the compute/communication table"
    )
    args = parser.parse_args()
    latency = args.latency_us * 1e-6

    print(f"| model | parameters | LoRA r{args.rank} on q,v | LoRA r{args.rank} on all 7 linear |")
    print("|---|---:|---:|---:|")
    for shape in (QWEN_05B, QWEN_7B):
        print(
            f"| {shape.name} | {shape.parameters():,} | {shape.lora_parameters(args.rank, QV):,} | "
            f"{shape.lora_parameters(args.rank, ALL_LINEAR):,} |"
        )

    print("\nBytes each rank sends per step (ring all-reduce of the gradients, 2(N-1)/N x S):\n")
    print("| gradients | S | " + " | ".join(f"N={n}" for n in RANKS) + " |")
    print("|---|---:|" + "---:|" * len(RANKS))
    for case, params, width in gradient_cases(args.rank):
        size = params * width
        cells = [f"{ring_bytes_per_rank(size, n) / 1e6:,.1f} MB" for n in RANKS]
        print(f"| {case} | {size / 1e6:,.1f} MB | " + " | ".join(cells) + " |")

    for n in RANKS:
        print(
            f"\nAll-reduce time per step, N={n}, {args.latency_us:g} us per hop "
            f"(latency term {human_seconds(2 * (n - 1) * latency)}):\n"
        )
        print("| gradients | " + " | ".join(LINKS) + " |")
        print("|---|" + "---:|" * len(LINKS))
        for case, params, width in gradient_cases(args.rank):
            cells = [
                human_seconds(ring_seconds(params * width, n, bw, latency)) for bw in LINKS.values()
            ]
            print(f"| {case} | " + " | ".join(cells) + " |")

    n = args.ranks
    print(
        f"\nCompute per step ({args.tokens:,} tokens per rank) against the all-reduce at N={n} "
        "(communication / compute; above 1: the network, not the chip, sets the pace; tunewire does "
        "not overlap the two, so the step takes their sum):\n"
    )
    print("| gradients | device | compute s/step | " + " | ".join(LINKS) + " |")
    print("|---|---|---:|" + "---:|" * len(LINKS))
    for case, params, width in gradient_cases(args.rank):
        if "q,v" in case or "bf16" in case:
            continue
        shape = QWEN_05B if case.startswith("0.5B") else QWEN_7B
        for device, flops in DEVICES.items():
            compute = step_flops(shape.parameters(), args.tokens, "full" in case) / flops
            cells = [
                f"{ring_seconds(params * width, n, bw, latency) / compute:.2f}"
                for bw in LINKS.values()
            ]
            print(f"| {case} | {device} | {compute:.2f} | " + " | ".join(cells) + " |")

    print(
        "\nMemory per rank before activations (data parallel: every rank holds everything), AdamW; "
        "LoRA adds its adapters x 16 bytes (weights, gradients, two moments):\n"
    )
    print(
        "| model | weights fp32 | gradients fp32 | AdamW moments fp32 | FULL total | LoRA: fp32 base | "
        "LoRA: bf16 base | QLoRA: 4-bit base |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for shape in (QWEN_05B, QWEN_7B):
        p = shape.parameters()
        print(
            f"| {shape.name} | {p * 4 / 1e9:.1f} GB | {p * 4 / 1e9:.1f} GB | {p * 8 / 1e9:.1f} GB | "
            f"{p * 16 / 1e9:.1f} GB | {p * 4 / 1e9:.1f} GB | {p * 2 / 1e9:.1f} GB | {p * 0.625 / 1e9:.1f} GB |"
        )


if __name__ == "__main__":
    main()
