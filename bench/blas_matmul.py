"""OpenBLAS against mlx's bundled BLAS: float32 matmul and a tiny-model training step.

    .venv/bin/python bench/blas_matmul.py [--repeats 5] [--rounds 3]

Runs the same measurement in subprocesses, one with the environment
`tunewire.trainer.processes.blas.worker_env` gives a training worker (OpenBLAS in
LD_PRELOAD) and one without (TUNEWIRE_OPENBLAS=0), alternating for a few
rounds and keeping each side's best round, so that other work on the machine
disturbs both sides alike. Prints a Markdown section for bench/RESULTS.md.
Linux only: elsewhere there is nothing to preload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

MATMUL_SIZES = (1024, 2048)
# Tokens per training step: batch 4 x 256 tokens.
BATCH, SEQUENCE = 4, 256


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocation and graph setup
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model_dir: str, repeats: int) -> dict:
    """Runs inside the child process: the only place mlx is imported."""
    import mlx.core as mx
    import mlx_lm
    import mlx_lm.utils
    from mlx import nn

    from tunewire.trainer.processes.blas import blas_in_use

    result = {"blas": blas_in_use(), "matmul_gflops": {}}
    for n in MATMUL_SIZES:
        a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
        mx.eval(a, b)
        seconds = median_seconds(lambda: mx.eval(a @ b), repeats)  # noqa: B023
        result["matmul_gflops"][n] = 2 * n**3 / seconds / 1e9

    model, _ = mlx_lm.load(model_dir)
    vocab = model.args.vocab_size
    tokens = mx.random.randint(0, vocab, (BATCH, SEQUENCE + 1))

    def loss_fn(model, inputs, targets):
        return nn.losses.cross_entropy(model(inputs), targets).mean()

    loss_and_grad = nn.value_and_grad(model, loss_fn)

    def step():
        loss, grads = loss_and_grad(model, tokens[:, :-1], tokens[:, 1:])
        mx.eval(loss, grads)

    seconds = median_seconds(step, repeats)
    result["step_ms"] = seconds * 1000
    result["tokens_per_s"] = BATCH * SEQUENCE / seconds
    result["parameters"] = mlx_lm.utils.get_total_parameters(model)
    return result


def run_child(env: dict, model_dir: str, repeats: int) -> dict:
    command = [sys.executable, __file__, "--child", model_dir, "--repeats", str(repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best(rounds: list[dict]) -> dict:
    """Each measurement's best round: highest GFLOP/s, shortest step."""
    fastest = min(rounds, key=lambda r: r["step_ms"])
    gflops = {n: max(r["matmul_gflops"][n] for r in rounds) for n in rounds[0]["matmul_gflops"]}
    return {**fastest, "matmul_gflops": gflops}


def report(without: dict, with_: dict, library: Path, args: argparse.Namespace) -> str:
    setting = (
        f"Command: `.venv/bin/python bench/blas_matmul.py --repeats {args.repeats} "
        f"--rounds {args.rounds}` ({time.strftime('%Y-%m-%d')}; {cpu_name()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
        f"mlx {version('mlx')}; preloaded `{library}`; OPENBLAS_NUM_THREADS "
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}). Each cell: the best of "
        f"{args.rounds} alternating rounds, each round the median of {args.repeats} runs "
        "after a warm-up in a fresh process."
    )
    header = (
        f"| measurement | mlx bundled BLAS ({without['blas']}) "
        f"| OpenBLAS preloaded ({with_['blas']}) | ratio |"
    )
    lines = ["## OpenBLAS: float32 matmul", "", setting, "", header, "|---|---:|---:|---:|"]
    for n in MATMUL_SIZES:
        slow, fast = without["matmul_gflops"][str(n)], with_["matmul_gflops"][str(n)]
        lines.append(f"| matmul {n}x{n}, GFLOP/s | {slow:.1f} | {fast:.1f} | {fast / slow:.1f}x |")
    lines.append(
        f"| tiny model ({with_['parameters']:,} parameters) forward+backward, batch "
        f"{BATCH}x{SEQUENCE} tokens, ms/step | {without['step_ms']:.0f} | "
        f"{with_['step_ms']:.0f} | {without['step_ms'] / with_['step_ms']:.1f}x |"
    )
    lines.append(
        f"| same step, tokens/s | {without['tokens_per_s']:,.0f} | "
        f"{with_['tokens_per_s']:,.0f} | {with_['tokens_per_s'] / without['tokens_per_s']:.1f}x |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument("--child", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats)))
        return 0

    from tunewire.tiny_model import build_tiny_model
    from tunewire.trainer.processes.blas import find_openblas, worker_env

    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TUNEWIRE_OPENBLAS")}
    library = find_openblas(base)
    if library is None:
        print("no OpenBLAS to compare with on this machine (Linux with libopenblas only)")
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = str(build_tiny_model(Path(scratch) / "tiny", seed=0))
        sides = {
            "without": worker_env({**base, "TUNEWIRE_OPENBLAS": "0"}),
            "with": worker_env(base),
        }
        rounds = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, env in sides.items():
                rounds[side].append(run_child(env, model_dir, args.repeats))
    print(report(best(rounds["without"]), best(rounds["with"]), library, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
