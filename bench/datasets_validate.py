"""Benchmark: validate + normalize a generated JSONL dataset, against a bare json.loads loop.

Run from the repository root:

    .venv/bin/python -m bench.datasets_validate --size-gb 1

For each format (Alpaca, ShareGPT, chat messages) it generates a JSONL file of
the given size and one of a quarter of it in bench/.work/ (records of varied
shapes, 1% bad lines of several kinds), then runs, each in a fresh process:
the peer (a loop that only runs json.loads on each line, binary and text
mode), `validate_file`, and `normalize_file` (validation + canonical JSONL with
a 5% validation split). It reports throughput (MB/s of input) and the peak RSS
of each process (os.wait4), and deletes the generated files at the end.
Targets: peak RSS under 300 MB at both sizes; normalize at least half the
faster peer's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
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


def _child(kind: str, path: str, out_dir: str) -> None:
    start = time.perf_counter()
    result = {}
    if kind == "peer_binary":
        loads = json.loads
        with open(path, "rb") as f:
            for line in f:
                try:
                    loads(line)
                except ValueError:
                    pass
    elif kind == "peer_text":
        loads = json.loads
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                try:
                    loads(line)
                except ValueError:
                    pass
    elif kind == "validate":
        from tunewire.datasets.validate import validate_file

        report = validate_file(path)
        result = {
            "records": report.total_samples,
            "valid": report.valid_samples,
            "errors": report.error_count,
        }
    elif kind == "normalize":
        from tunewire.datasets.normalize import normalize_file

        outcome = normalize_file(path, out_dir, validation_fraction=0.05, seed=0)
        stats = outcome.statistics
        result = {
            "records": outcome.report.total_samples,
            "valid": outcome.report.valid_samples,
            "errors": outcome.report.error_count,
            "train": stats.train_records,
            "validation": stats.validation_records,
        }
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result))


def _measure(kind: str, path: Path, out_dir: Path) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.datasets_validate", "--child", kind, str(path), str(out_dir)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} on {path} failed with exit code {proc.returncode}")
    result = json.loads(output)
    result["rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-gb", type=float, default=1.0, help="size of the larger file per format"
    )
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    WORK.mkdir(parents=True, exist_ok=True)
    sizes = [args.size_gb / 4, args.size_gb]
    rows = []
    try:
        for fmt in args.formats.split(","):
            for size_gb in sizes:
                path = WORK / f"{fmt}-{size_gb:g}gb.jsonl"
                out_dir = WORK / f"{fmt}-out"
                records = generate(fmt, int(size_gb * (1 << 30)), path)
                mb = path.stat().st_size / (1 << 20)
                runs = {
                    kind: _measure(kind, path, out_dir)
                    for kind in ("peer_binary", "peer_text", "validate", "normalize")
                }
                shutil.rmtree(out_dir, ignore_errors=True)
                path.unlink()
                peer = min(runs["peer_binary"]["seconds"], runs["peer_text"]["seconds"])
                row = {
                    "format": fmt,
                    "size_mb": round(mb),
                    "records": records,
                    "avg_record_bytes": round(mb * (1 << 20) / records),
                }
                for kind, run in runs.items():
                    row[f"{kind}_mb_s"] = round(mb / run["seconds"], 1)
                    row[f"{kind}_rss_mb"] = round(run["rss_mb"])
                row["validate_vs_peer"] = round(peer / runs["validate"]["seconds"], 2)
                row["normalize_vs_peer"] = round(peer / runs["normalize"]["seconds"], 2)
                row["normalize_report"] = {
                    k: v for k, v in runs["normalize"].items() if k != "seconds"
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)

    print()
    print(
        "| format | size | records (avg bytes) | peer json.loads MB/s (bin / text) "
        "| validate MB/s (× peer) "
        "| normalize MB/s (× peer) | peak RSS MB peer / validate / normalize |"
    )
    print("|---|---|---|---|---|---|---|")
    ok = True
    for r in rows:
        print(
            f"| {r['format']} | {r['size_mb']} MB | {r['records']:,} ({r['avg_record_bytes']}) "
            f"| {r['peer_binary_mb_s']} / {r['peer_text_mb_s']} "
            f"| {r['validate_mb_s']} ({r['validate_vs_peer']}×) "
            f"| {r['normalize_mb_s']} ({r['normalize_vs_peer']}×) "
            f"| {r['peer_text_rss_mb']} / {r['validate_rss_mb']} / {r['normalize_rss_mb']} |"
        )
        ok &= (
            r["normalize_vs_peer"] >= 0.5
            and max(r["validate_rss_mb"], r["normalize_rss_mb"]) < RSS_LIMIT_MB
        )
    print()
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
