"""Benchmark: validate + normalize a generated JSONL dataset, against a bare json.loads loop.

Run from the repository root:

    .venv/bin/python -m bench.datasets_validate --size-gb 1

For each format (Alpaca, ShareGPT, chat messages) it generates a JSONL file of
the given size and one of a quarter of it in bench/.work/datasets/ (records of varied
shapes, 1% bad lines of several kinds), then runs, each in a fresh process:
the peer (a loop that only runs json.loads on each line, binary and text
mode), `validate_file`, and `normalize_file` (validation + canonical JSONL with
a 5% validation split) with worker processes as the library chooses and in one
process. Each kind runs `--repeats` times, interleaved; the fastest run counts.
It reports throughput (MB/s of input), CPU time and peak RSS (workers counted
at their largest peak each), and deletes the generated files at the end. The
library's bytecode is compiled first, as an installed package's is.
Targets: peak RSS under 300 MB at both sizes; normalize in one process at
least half the faster peer's throughput (the peer is one process too).
"""

from __future__ import annotations

import argparse
import compileall
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work" / "datasets"  # bench/.work is shared
RSS_LIMIT_MB = 300
FORMATS = ("alpaca", "sharegpt", "messages")

_WORDS = [
    "the",
    "model",
    "learns",
    "from",
    "examples",
    "of",
    "questions",
    "and",
    "answers",
    "about",
    "data",
    "training",
    "loss",
    "rate",
    "gradient",
    "batch",
    "token",
    "layer",
    "attention",
    "weight",
    "memory",
    "speed",
    "quality",
    "result",
    "error",
    "value",
    "function",
    "return",
    "list",
    "string",
    "number",
    "file",
    "line",
    "record",
    "format",
    "check",
    "split",
    "seed",
    "report",
    "a",
    "an",
    "of",
    "to",
    "in",
    "for",
    "with",
    "on",
    "at",
    "by",
    "from",
    "is",
    "are",
    "was",
    "be",
    "this",
    "that",
    "it",
    "as",
    "or",
    "and",
    "not",
    "can",
    "will",
    "write",
    "explain",
    "describe",
    "summarize",
    "translate",
    "compare",
    "list",
    "show",
    "why",
    "how",
    "what",
    "when",
    "where",
    "python",
    "code",
    "example",
    "system",
    "user",
    "assistant",
    "tool",
    "call",
    "output",
    "input",
    "instruction",
    "history",
]
_UNICODE = ["café", "naïve", "日本語の文", "Grüße", "emoji 🙂", "Ελληνικά", "русский текст"]


def _text_pool(rng: random.Random, count: int = 4000) -> list[str]:
    """Snippets of 5 to 400 words; some with newlines, quotes, tabs or non-ASCII text."""
    pool = []
    for i in range(count):
        words = rng.choices(_WORDS, k=rng.choice((5, 12, 30, 60, 120, 250, 400)))
        text = " ".join(words)
        if i % 3 == 0:
            text = text.replace(" of ", ".\n", 3)
        if i % 11 == 0:
            text = f'He said "{text[:40]}" and more: {text[40:]}'
        if i % 17 == 0:
            text = text.replace(" code ", "\n\tcode ", 2)
        if i % 20 == 0:
            text += " " + rng.choice(_UNICODE)
        pool.append(text)
    return pool


def _alpaca(rng, pool, n):
    record = {"instruction": f"[{n}] " + rng.choice(pool), "input": "", "output": rng.choice(pool)}
    if rng.random() < 0.5:
        record["input"] = rng.choice(pool)
    if rng.random() < 0.2:
        record["system"] = "You are a careful assistant."
    if rng.random() < 0.1:
        record["history"] = [[rng.choice(pool), rng.choice(pool)] for _ in range(rng.randint(1, 2))]
    return record


def _turns(rng, pool, n):
    """Roles of a valid conversation: user/assistant pairs, sometimes with a tool call."""
    roles = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.1:
            roles += ["user", "assistant_call", "tool", "assistant"]
        else:
            roles += ["user", "assistant"]
    return [
        (role, (f"[{n}] " if i == 0 else "") + rng.choice(pool)) for i, role in enumerate(roles)
    ]


_SHAREGPT_ROLES = {
    "user": "human",
    "assistant": "gpt",
    "assistant_call": "function_call",
    "tool": "observation",
}


def _sharegpt(rng, pool, n):
    turns = [{"from": _SHAREGPT_ROLES[r], "value": v} for r, v in _turns(rng, pool, n)]
    if rng.random() < 0.3:
        turns.insert(0, {"from": "system", "value": "You are a careful assistant."})
    return {"conversations": turns}


def _messages(rng, pool, n):
    roles = {"assistant_call": "assistant"}
    messages = [{"role": roles.get(r, r), "content": v} for r, v in _turns(rng, pool, n)]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": "You are a careful assistant."})
    return {"messages": messages}


_MAKERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "messages": _messages}


def _bad_line(rng, good: str, kind: int) -> bytes:
    """One of several kinds of broken line, derived from a good one."""
    record = json.loads(good)
    key = next(iter(record))
    if kind == 0:
        return good[: len(good) // 2].encode()  # truncated JSON
    if kind == 1:
        record[key] = 42  # a number where text or a list belongs
    elif kind == 2:
        del record[key]  # a missing field
    elif kind == 3:
        return b'["not", "an", "object"]'
    elif kind == 4:
        return good.encode()[:20] + b"\xff\xfe" + good.encode()[20:]  # invalid UTF-8
    elif kind == 5:
        record[key] = ""  # empty value
    else:
        return good.encode().replace(b'"', b"'", 4)  # single quotes: invalid JSON
    return json.dumps(record).encode()


def generate(fmt: str, size: int, path: Path, seed: int = 0) -> int:
    rng = random.Random(seed)
    pool = _text_pool(rng)
    make = _MAKERS[fmt]
    written = n = 0
    with open(path, "wb", buffering=1 << 22) as f:
        while written < size:
            batch = []
            for _ in range(1000):
                n += 1
                line = json.dumps(make(rng, pool, n))
                data = _bad_line(rng, line, n // 100 % 7) if n % 100 == 0 else line.encode()
                batch.append(data)
            chunk = b"\n".join(batch) + b"\n"
            f.write(chunk)
            written += len(chunk)
    return n


# --- children: each measurement runs in a fresh process -------------------------------

KINDS = ("peer_binary", "peer_text", "validate", "normalize", "normalize_1")


def _child(kind: str, path: str, out_dir: str) -> None:
    import resource

    start = time.perf_counter()
    result: dict = {"workers": 1}
    if kind in ("peer_binary", "peer_text"):
        loads = json.loads
        mode = (
            {"mode": "rb"} if kind == "peer_binary" else {"encoding": "utf-8", "errors": "replace"}
        )
        with open(path, **mode) as f:
            for line in f:
                try:
                    loads(line)
                except ValueError:
                    pass
    else:
        from tunewire.datasets.api import (
            ValidationOptions,
            normalize_file,
            processes_for,
            validate_file,
        )

        options = ValidationOptions(workers=1 if kind == "normalize_1" else 0)
        result["workers"] = processes_for(path, options)
        if kind == "validate":
            report = validate_file(path, options)
        else:
            report = normalize_file(path, out_dir, 0.05, 0, options).report
        result["records"], result["valid"] = report.total_samples, report.valid_samples
        result["errors"] = report.error_count
    result["seconds"] = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_seconds"] = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
    # Linux reports kilobytes. Workers run at the same time: count each at the largest one's peak.
    result["rss_mb"] = own.ru_maxrss / 1024
    if result["workers"] > 1:
        result["rss_mb"] += result["workers"] * workers.ru_maxrss / 1024
    print(json.dumps(result))


def _measure(kind: str, path: Path, out_dir: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.datasets_validate", "--child", kind, str(path), str(out_dir)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} on {path} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _measure_file(path: Path, out_dir: Path, repeats: int) -> dict[str, dict]:
    """Each kind `repeats` times, interleaved (the machine's load drifts); the fastest run counts."""
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for kind in KINDS:
            run = _measure(kind, path, out_dir)
            if kind not in best or run["seconds"] < best[kind]["seconds"]:
                best[kind] = run
            best[kind]["rss_mb"] = max(best[kind]["rss_mb"], run["rss_mb"])
            shutil.rmtree(out_dir, ignore_errors=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-gb", type=float, default=1.0, help="size of the larger file per format"
    )
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each kind; the fastest counts"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    # Bytecode as an installed package has it (pip compiles on install; this checkout may
    # run with PYTHONDONTWRITEBYTECODE): otherwise each child compiles the library anew.
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "datasets", quiet=1)
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for fmt in args.formats.split(","):
            for size_gb in (args.size_gb / 4, args.size_gb):
                path = WORK / f"{fmt}-{size_gb:g}gb.jsonl"
                records = generate(fmt, int(size_gb * (1 << 30)), path)
                runs = _measure_file(path, WORK / f"{fmt}-out", args.repeats)
                mb = path.stat().st_size / (1 << 20)
                path.unlink()
                rows.append(_row(fmt, mb, records, runs))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    _print_table(rows)


def _row(fmt: str, mb: float, records: int, runs: dict[str, dict]) -> dict:
    peer = min(runs["peer_binary"]["seconds"], runs["peer_text"]["seconds"])
    row = {
        "format": fmt,
        "size_mb": round(mb),
        "records": records,
        "avg_record_bytes": round(mb * (1 << 20) / records),
        "workers": runs["normalize"]["workers"],
        "valid": runs["normalize"]["valid"],
        "errors": runs["normalize"]["errors"],
    }
    for kind, run in runs.items():
        row[f"{kind}_mb_s"] = round(mb / run["seconds"], 1)
        row[f"{kind}_vs_peer"] = round(peer / run["seconds"], 2)
        row[f"{kind}_rss_mb"] = round(run["rss_mb"])
        row[f"{kind}_cpu_s"] = round(run["cpu_seconds"], 2)
    return row


def _print_table(rows: list[dict]) -> None:
    print()
    print(
        "| format | size | records (avg bytes) | peer json.loads MB/s (binary / text) "
        "| validate MB/s (× peer) | normalize MB/s (× peer) | normalize, 1 process (× peer) "
        "| peak RSS MB: peer / validate / normalize / 1 process |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for r in rows:
        print(
            f"| {r['format']} | {r['size_mb']:,} MB | {r['records']:,} ({r['avg_record_bytes']}) "
            f"| {r['peer_binary_mb_s']} / {r['peer_text_mb_s']} "
            f"| {r['validate_mb_s']} ({r['validate_vs_peer']}×) "
            f"| {r['normalize_mb_s']} ({r['normalize_vs_peer']}×, {r['workers']} workers) "
            f"| {r['normalize_1_mb_s']} ({r['normalize_1_vs_peer']}×) "
            f"| {r['peer_text_rss_mb']} / {r['validate_rss_mb']} / {r['normalize_rss_mb']} "
            f"/ {r['normalize_1_rss_mb']} |"
        )
        rss = max(r["validate_rss_mb"], r["normalize_rss_mb"], r["normalize_1_rss_mb"])
        ok &= r["normalize_1_vs_peer"] >= 0.5 and rss < RSS_LIMIT_MB
    print()
    print(
        "CPU seconds per GB of input (user + system, all processes): "
        "peer (text) / validate / normalize / normalize, 1 process (peer ÷ that)"
    )
    print()
    print("| format | size | peer | validate | normalize | normalize, 1 process |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        per_gb = 1024 / r["size_mb"]
        cpu = {k: r[f"{k}_cpu_s"] * per_gb for k in ("peer_text", "validate", "normalize")}
        one = r["normalize_1_cpu_s"] * per_gb
        print(
            f"| {r['format']} | {r['size_mb']:,} MB | {cpu['peer_text']:.1f} s "
            f"| {cpu['validate']:.1f} s | {cpu['normalize']:.1f} s "
            f"| {one:.1f} s ({cpu['peer_text'] / one:.2f}) |"
        )
    print()
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
