"""Checking a large plain JSONL file in worker processes, one byte range each, merged in order.

Parsing JSON dominates validation and is CPU-bound, so a big file is cut at
line boundaries into one range per CPU. Each worker (range_worker.py, a fresh
interpreter: no fork from a threaded gRPC daemon) counts the lines of its
range, learns where its first line is from the parent, checks its records
and writes its canonical lines (worker 0 straight into the output, the others
into parts appended afterwards). The parent merges their findings: issues in
file order, counts summed, duplicates across ranges found from the workers'
hash tables. Workers share one random hash seed, so their record hashes agree.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunewire.datasets import issues as codes
from tunewire.datasets.formats import detect, format_of_key
from tunewire.datasets.issues import Issue, IssueLog
from tunewire.datasets.options import ValidationOptions
from tunewire.datasets.partial import Partial, build_report
from tunewire.datasets.report import DatasetFormat, ValidationReport
from tunewire.datasets.scanner import mixed_formats
from tunewire.datasets.source import Layout
from tunewire.datasets.valid_records import duplicate_issue

if TYPE_CHECKING:
    import subprocess

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
# Worker logs keep this many more issues than asked: UNKNOWN_FIELD, reported once
# per worker, is reported once per file after merging, which frees places.
_EXTRA_ISSUES = 1000


_WARNING_ORDER = {
    codes.UNKNOWN_FIELD: 0,
    codes.TOO_MANY_TOKENS: 1,
    codes.SHORT_OUTPUT: 2,
    codes.DUPLICATE_RECORD: 3,
}


@dataclass
class Plan:
    path: str
    size: int
    ranges: list[tuple[int, int]]
    file_format: DatasetFormat
    format_line: int


def plan(path: str | os.PathLike, options: ValidationOptions) -> Plan | None:
    """How to split `path` among workers; None when one process should read it.

    Only plain JSONL files of at least `options.parallel_min_bytes`, without a
    tokenizer (token counting loads a model's tokenizer per process), whose
    first lines show the format, are split.
    """
    workers = options.workers or min(_cpus(), 8)
    if workers < 2 or options.tokenizer is not None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None  # the caller's open() reports it
    if not stat.S_ISREG(info.st_mode) or info.st_size < max(options.parallel_min_bytes, 1):
        return None
    with open(path, "rb") as f:
        head = f.read(1 << 20)
        if head.startswith(_GZIP_MAGIC):
            return None
        head = head.removeprefix(_UTF8_BOM)
        if head.lstrip()[:1] != b"{":
            return None
        found = _first_format(head)
        if found is None:
            return None
        boundaries = [_line_start_after(f, info.st_size * k // workers) for k in range(1, workers)]
    starts = sorted({0, *(b for b in boundaries if 0 < b < info.st_size)})
    ranges = list(zip(starts, [*starts[1:], info.st_size]))
    if len(ranges) < 2:
        return None
    return Plan(os.fspath(path), info.st_size, ranges, *found)


def processes_for(path: str | os.PathLike, options: ValidationOptions) -> int:
    """How many processes `validate_file` and `normalize_file` would read `path` with."""
    found = plan(path, options)
    return len(found.ranges) if found else 1


def _cpus() -> int:
    """CPUs this process may run on (a container's limit, where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _first_format(head: bytes) -> tuple[DatasetFormat, int] | None:
    """The format and line of the first record with a recognisable format in the first bytes."""
    for number, raw in enumerate(head.split(b"\n")[:-1], start=1):
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if type(record) is dict and (found := detect(record)) is not None:
            return found, number
    return None


def _line_start_after(f, offset: int) -> int:
    f.seek(offset)
    position = offset
    while True:
        block = f.read(1 << 16)
        if not block:
            return position
        end = block.find(b"\n")
        if end >= 0:
            return position + end + 1
        position += len(block)


def run(plan: Plan, options: ValidationOptions, normalize=None) -> ValidationReport:
    """Runs the workers. `normalize`: (train, validation or None) AtomicFiles, fraction, seed."""
    # Only here: a scan in one process starts without them.
    import secrets
    import subprocess

    # Next to the output when there is one: workers' tables and results stay on that disk.
    near = normalize[0].temp.parent if normalize is not None else None
    with tempfile.TemporaryDirectory(prefix=".tunewire-datasets-", dir=near) as work:
        jobs = _jobs(plan, options, Path(work), normalize)
        env = {**os.environ, "PYTHONHASHSEED": str(secrets.randbelow(1 << 32))}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tunewire.datasets.range_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                text=True,
            )
            for _ in jobs
        ]
        try:
            results = _exchange(procs, jobs)
            # Merged first: the workers' tables leave the disk before the parts are appended.
            merged, counts = _merge(results, jobs, options)
            if normalize is not None:
                _append_parts(jobs, normalize[0], normalize[1])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for job in jobs[1:]:
                for part in (job["train"], job["validation"]):
                    if part:
                        Path(part).unlink(missing_ok=True)
    report = build_report(merged, Layout.JSONL, plan.size, options, None)
    report.statistics.train_records, report.statistics.validation_records = counts
    return report


def _jobs(plan: Plan, options, work: Path, normalize) -> list[dict]:
    settings = asdict(options)
    settings["max_issues"] = options.max_issues + _EXTRA_ISSUES
    jobs = []
    for k, (start, end) in enumerate(plan.ranges):
        job = {
            "path": plan.path,
            "start": start,
            "end": end,
            "options": settings,
            "file_format": plan.file_format.value,
            "format_line": plan.format_line,
            "tracked_records": options.max_tracked_records // len(plan.ranges),
            "result": str(work / f"result-{k}.pickle"),
            "train": None,
            "validation": None,
            "fraction": 0.0,
            "seed": 0,
        }
        if normalize is not None:
            train, held_out, fraction, seed = normalize
            # Worker 0 writes into the output itself; the others into parts next to it.
            job["train"] = str(
                train.temp if k == 0 else train.temp.with_name(f"{train.temp.name}.{k}")
            )
            if held_out is not None:
                job["validation"] = str(
                    held_out.temp
                    if k == 0
                    else held_out.temp.with_name(f"{held_out.temp.name}.{k}")
                )
            job["fraction"], job["seed"] = fraction, seed
        jobs.append(job)
    return jobs


def _append_parts(jobs: list[dict], train, held_out) -> None:
    for job in jobs[1:]:
        train.append(Path(job["train"]))
        if held_out is not None:
            held_out.append(Path(job["validation"]))


def _exchange(procs: list[subprocess.Popen], jobs: list[dict]) -> list[dict]:
    """Starts each worker, tells it the line its range starts at, and collects its result."""
    import pickle

    for proc, job in zip(procs, jobs):
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
    newlines = [_read_int(proc) for proc in procs]
    line = 1
    for proc, count in zip(procs, newlines):
        proc.stdin.write(f"{line}\n")
        proc.stdin.close()
        line += count
    results = []
    for k, (proc, job) in enumerate(zip(procs, jobs)):
        if proc.wait() != 0:
            raise RuntimeError(f"dataset worker {k} failed with exit code {proc.returncode}")
        with open(job["result"], "rb") as f:
            results.append(pickle.load(f))
    return results


def _read_int(proc: subprocess.Popen) -> int:
    text = proc.stdout.readline()
    try:
        return int(text)
    except ValueError:
        proc.wait()
        raise RuntimeError(
            f"dataset worker failed before reading (exit code {proc.returncode})"
        ) from None


def _merge(
    results: list[dict], jobs: list[dict], options: ValidationOptions
) -> tuple[Partial, tuple[int, int]]:
    """One Partial for the whole file, from the workers' in file order."""
    parts: list[Partial] = [r["partial"] for r in results]
    limit = options.max_issues
    log = IssueLog(limit)
    merged = Partial(log, file_format=parts[0].file_format, format_line=parts[0].format_line)
    unknown: dict[str, Issue] = {}
    warnings: list[Issue] = []
    for part in parts:
        merged.total += part.total
        merged.valid += part.valid
        merged.turns += part.turns
        merged.characters += part.characters
        merged.tokens += part.tokens
        merged.previews += part.previews[: max(0, options.preview_records - len(merged.previews))]
        for issue in part.unknown_fields:
            unknown.setdefault(issue.field, issue)
        for code, count in part.log.counts.items():
            log.counts[code] = log.counts.get(code, 0) + count
        log.error_count += part.log.error_count
        log.errors += part.log.errors[: max(0, limit - len(log.errors))]
        warnings += [w for w in part.log.warnings if w.code != codes.UNKNOWN_FIELD]
    merged.unknown_fields = list(unknown.values())
    for part in parts:  # each worker named its own first line of another format; use the file's
        for found, line in part.other_formats.items():
            merged.other_formats[found] = min(line, merged.other_formats.get(found, line))
    log.errors = [_renamed(issue, merged) for issue in log.errors]
    duplicates, count, first_line = _duplicates_across(jobs, limit)
    # A worker named the first copy in its own range; name the file's first copy.
    for part in parts:
        for issue_line, earlier in part.duplicate_of.items():
            merged.duplicate_of[issue_line] = first_line(earlier)
    warnings = [
        duplicate_issue(w.line, merged.duplicate_of[w.line])
        if w.code == codes.DUPLICATE_RECORD and w.line in merged.duplicate_of
        else w
        for w in warnings
    ]
    if count:
        log.counts[codes.DUPLICATE_RECORD] = log.counts.get(codes.DUPLICATE_RECORD, 0) + count
    if unknown:
        log.counts[codes.UNKNOWN_FIELD] = len(unknown)
    warnings += merged.unknown_fields + duplicates
    # File order, and on one line the order the scanner adds them in.
    warnings.sort(key=lambda issue: (issue.line, _WARNING_ORDER[issue.code]))
    log.warnings = warnings[:limit]
    log.warning_count = sum(n for code, n in log.counts.items() if code in codes.WARNING_CODES)
    counts = (sum(r["counts"][0] for r in results), sum(r["counts"][1] for r in results))
    return merged, counts


def _renamed(issue: Issue, merged: Partial) -> Issue:
    """A MIXED_FORMATS issue naming the file's first line of the record's format."""
    if issue.code != codes.MIXED_FORMATS:
        return issue
    found = format_of_key(issue.field)
    return mixed_formats(
        issue.line, found, merged.other_formats[found], merged.file_format, merged.format_line
    )


def _duplicates_across(jobs: list[dict], limit: int):
    """DUPLICATE_RECORD for a range's records whose conversation an earlier range had.

    Each worker saved its remembered hashes sorted, with their first lines
    (12 bytes a record, see dedupe.save_sorted); a range's hashes are looked
    up in each earlier range's, earliest first, so a record is named as a
    copy of the file's first. Returns the first `limit` issues, their total,
    and `first_line(line)`: for a record first seen in its range at `line`,
    the line of its earliest copy.
    """
    import numpy as np

    def load(job):
        tables = []
        for suffix, dtype in ((".keys", np.int64), (".lines", np.uint32)):
            path = Path(job["result"] + suffix)
            tables.append(np.fromfile(path, dtype=dtype))
            path.unlink()
        return tables

    ranges = [load(job) for job in jobs]
    later_lines, earlier_lines = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for k in range(1, len(ranges)):
        keys, lines = ranges[k]
        first = np.zeros(len(keys), dtype=np.int64)  # the earliest copy's line; 0: none
        for earlier_keys, earlier_firsts in ranges[:k]:
            if not len(keys) or not len(earlier_keys):
                continue
            at = np.minimum(np.searchsorted(earlier_keys, keys), len(earlier_keys) - 1)
            hit = np.flatnonzero((earlier_keys[at] == keys) & (first == 0))
            first[hit] = earlier_firsts[at[hit]]
            del at
        found = np.flatnonzero(first)
        later_lines.append(lines[found].astype(np.int64))
        earlier_lines.append(first[found])
    del ranges
    later, earlier = np.concatenate(later_lines), np.concatenate(earlier_lines)
    order = np.argsort(later, kind="stable")
    later, earlier = later[order], earlier[order]
    issues = [duplicate_issue(int(a), int(b)) for a, b in zip(later[:limit], earlier[:limit])]

    def first_line(line: int) -> int:
        at = int(np.searchsorted(later, line))
        return int(earlier[at]) if at < len(later) and later[at] == line else line

    return issues, len(later), first_line
