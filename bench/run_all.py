"""Runs every benchmark in bench/ with modest sizes and collects their Markdown sections.

    .venv/bin/python -m bench.run_all [--only trainer_overhead,trainer_memory] [--skip datasets_validate]

`make bench` runs this. Each benchmark module (every bench/*.py but this one,
the shared helpers and distributed_paper's arithmetic) runs in its own process, one after the other, with the
sizes below (a module not listed runs with its own defaults). Their output
goes to bench/.work/results/<time>/<name>.md (stdout: the section) and
<name>.log (stderr), plus all.md with every section; the list of files is
printed at the end. Copy a section into bench/RESULTS.md by hand, with its command.
Takes 15-20 minutes on two CPUs; a module that fails does not stop the others.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench import common

# Not benchmarks: shared helpers, this runner, and the arithmetic behind docs/scaling.md.
HELPERS = {"__init__", "common", "processes", "run_all", "distributed_paper"}
# Modest sizes: minutes each on two CPUs. datasets_validate first: it deletes
# bench/.work when it ends, so it must run before anything leaves files there.
MODEST_ARGS: dict[str, list[str]] = {
    "datasets_validate": ["--size-gb", "0.1"],
    "blas_matmul": ["--repeats", "3", "--rounds", "2"],
    "gateway_overhead": ["--seconds", "2", "--rounds", "2"],
    "trainer_overhead": ["--models", "tiny,small", "--rounds", "2"],
    "trainer_openblas": ["--models", "tiny,small", "--rounds", "1"],
    "trainer_streaming": ["--steps", "100", "--rounds", "1"],
    "trainer_memory": ["--batch", "1", "--seq", "64", "--steps", "2"],
    "distributed_scaling": ["--steps", "8", "--rounds", "1"],
    "trainer_step_ab": ["--steps", "30"],
}


def benchmark_modules() -> list[str]:
    """Every benchmark in bench/, in MODEST_ARGS' order first, then the rest by name."""
    here = Path(__file__).resolve().parent
    found = sorted(p.stem for p in here.glob("*.py") if p.stem not in HELPERS)
    return [n for n in MODEST_ARGS if n in found] + [n for n in found if n not in MODEST_ARGS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated module names to run")
    parser.add_argument("--skip", default="", help="comma-separated module names not to run")
    args = parser.parse_args()
    modules = benchmark_modules()
    only = [m for m in args.only.split(",") if m]
    skip = {m for m in args.skip.split(",") if m}
    unknown = [m for m in [*only, *skip] if m not in modules]
    if unknown:
        raise SystemExit(f"no benchmark {unknown[0]!r} in bench/; there are: {', '.join(modules)}")
    modules = [m for m in (only or modules) if m not in skip]

    out_dir = common.WORK / "results" / time.strftime("%Y%m%d-%H%M%S")
    sections, summary = {}, []
    began = time.monotonic()
    for name in modules:
        command = [common.PYTHON, "-m", f"bench.{name}", *MODEST_ARGS.get(name, [])]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        tic = time.monotonic()
        done = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - tic
        # Written after the module ended: datasets_validate deletes bench/.work as it ends.
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{name}.md").write_text(done.stdout, encoding="utf-8")
        (out_dir / f"{name}.log").write_text(done.stderr, encoding="utf-8")
        sections[name] = done.stdout
        status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
        summary.append((name, status, seconds))
        print(f"   {status} in {seconds:.0f} s", flush=True)
        if done.returncode != 0:
            print("   " + "\n   ".join(done.stderr.strip().splitlines()[-5:]), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "all.md").write_text(
        "\n\n".join(s.strip() for s in sections.values()) + "\n", encoding="utf-8"
    )

    print(
        f"\nBenchmarks finished in {(time.monotonic() - began) / 60:.1f} min; results in {out_dir}/:"
    )
    for name, status, seconds in summary:
        print(f"  {name}.md  ({status}, {seconds:.0f} s; its stderr in {name}.log)")
    print(
        "  all.md  (every section)\nCopy sections into bench/RESULTS.md together with their commands."
    )
    return 0 if all(status == "ok" for _, status, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
