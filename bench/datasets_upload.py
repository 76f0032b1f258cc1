"""Benchmark: the trainer's memory and disk while a large dataset is uploaded to it.

Run from the repository root (about 2 minutes per GiB on two busy cores):

    .venv/bin/python -m bench.datasets_upload --size-gb 1

Generates a JSONL file of short Alpaca records (about 157 bytes each, every
one distinct, so the duplicate table is at its largest: 6.8 million records
per GiB) in bench/.work/datasets-upload/, starts `tunewire-trainer` in its own
process with an empty home, warms it up with two small uploads (plain and
gzip: modules a first upload loads are not what a large one keeps), and
uploads the file over gRPC in 4 MiB chunks, read from disk as they are sent.
Every 50 ms it samples the RSS of the daemon and of all its child processes
(the dataset process and its range workers), and the bytes under the dataset
store. Reported: the daemon's RSS before, at its peak, and 5 s after the
upload returned; the peak of the daemon and its children together; the
dataset store's peak and final size against the raw file plus its canonical
records. Targets (issue 13, item 7): daemon peak under
300 MB, its memory back to where it was afterwards, disk at most the raw file
plus its canonical records.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import threading
import time
from pathlib import Path

from bench.processes import Daemon

WORK = Path(__file__).resolve().parent / ".work" / "datasets-upload"
RSS_LIMIT_MB = 300
CHUNK = 4 << 20
WARM_UP = b'{"instruction": "Warm up.", "input": "", "output": "Warm."}\n' * 100
_WORDS = ("model", "data", "token", "layer", "batch", "loss", "rate", "weight", "split", "seed")


def generate(path: Path, size: int) -> int:
    """Distinct short records (about 157 bytes each) until the file holds `size` bytes."""
    written = n = 0
    with open(path, "wb", buffering=1 << 22) as f:
        while written < size:
            lines = []
            for _ in range(10_000):
                n += 1
                a, b = _WORDS[n % 10], _WORDS[n // 10 % 10]
                lines.append(
                    f'{{"instruction": "In one short line: what does the {a} do to the {b}, '
                    f'case {n}?", "input": "", "output": "It changes the {a} and the {b}; '
                    f'case {n}."}}\n'
                )
            chunk = "".join(lines).encode()
            f.write(chunk)
            written += len(chunk)
    return n


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        found += kids
        frontier += kids
    return found


def tree_bytes(root: Path) -> int:
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Sampler(threading.Thread):
    """Samples RSS (daemon; daemon and children) and the store's bytes every 50 ms."""

    def __init__(self, pid: int, store: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.store = pid, store
        self.daemon_peak = self.tree_peak = self.disk_peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        ticks = 0
        while not self._done.is_set():
            own = rss_kb(self.pid)
            tree = own + sum(rss_kb(child) for child in descendants(self.pid))
            self.daemon_peak = max(self.daemon_peak, own)
            self.tree_peak = max(self.tree_peak, tree)
            if ticks % 10 == 0:  # every 0.5 s: walking the store is not free
                self.disk_peak = max(self.disk_peak, tree_bytes(self.store))
            ticks += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self._done.set()
        self.join()


async def upload(daemon: Daemon, path: Path):
    from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
    from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc

    def parts():
        yield dataset_service_pb.UploadDatasetRequest(
            metadata=dataset_service_pb.UploadMetadata(display_name=path.name)
        )
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield dataset_service_pb.UploadDatasetRequest(chunk=chunk)

    async with daemon.channel() as channel:
        reply = await dataset_service_grpc.DatasetServiceStub(channel).UploadDataset(
            parts(), timeout=3600
        )
    return reply.dataset


async def measure(path: Path, records: int) -> dict:
    home = WORK / "home"
    shutil.rmtree(home, ignore_errors=True)
    daemon = Daemon(home, WORK)
    try:
        await daemon.ready()
        # What a first upload loads once (modules, the dataset process's machinery) is not
        # what a large one keeps: warm up with a small file in each path first.
        for name, data in (("warm.jsonl", WARM_UP), ("warm.jsonl.gz", gzip.compress(WARM_UP))):
            (WORK / name).write_bytes(data)
            await upload(daemon, WORK / name)
        await asyncio.sleep(2)
        before = rss_kb(daemon.proc.pid)
        sampler = Sampler(daemon.proc.pid, home / "datasets")
        sampler.start()
        start = time.perf_counter()
        dataset = await upload(daemon, path)
        seconds = time.perf_counter() - start
        await asyncio.sleep(5)
        sampler.stop()
        after = rss_kb(daemon.proc.pid)
        raw = path.stat().st_size
        canonical = Path(dataset.normalized_path).stat().st_size
        stored = tree_bytes(home / "datasets")
        return {
            "records": records,
            "valid_records": dataset.report.valid_samples,
            "raw_mb": raw / 1e6,
            "canonical_mb": canonical / 1e6,
            "seconds": seconds,
            "daemon_before_mb": before / 1024,
            "daemon_peak_mb": sampler.daemon_peak / 1024,
            "daemon_after_mb": after / 1024,
            "tree_peak_mb": sampler.tree_peak / 1024,
            "disk_peak_mb": max(sampler.disk_peak, stored) / 1e6,
            "disk_final_mb": stored / 1e6,
        }
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the upload in GiB")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "short-records.jsonl"
    try:
        records = generate(path, int(args.size_gb * (1 << 30)))
        row = asyncio.run(measure(path, records))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print(json.dumps(row))
    limit = row["raw_mb"] + row["canonical_mb"]
    print()
    print(
        "| upload | records | time | daemon RSS MB: before / peak / 5 s after "
        "| daemon + children peak MB | store MB: peak / final (raw + canonical) |"
    )
    print("|---|---:|---:|---|---:|---|")
    print(
        f"| {row['raw_mb']:,.0f} MB | {records:,} | {row['seconds']:.0f} s "
        f"| {row['daemon_before_mb']:.0f} / {row['daemon_peak_mb']:.0f} / "
        f"{row['daemon_after_mb']:.0f} | {row['tree_peak_mb']:.0f} "
        f"| {row['disk_peak_mb']:,.0f} / {row['disk_final_mb']:,.0f} ({limit:,.0f}) |"
    )
    met = (
        row["daemon_peak_mb"] < RSS_LIMIT_MB
        and row["daemon_after_mb"] <= row["daemon_before_mb"] + 10
        and row["disk_peak_mb"] <= limit * 1.01
    )
    print()
    print("targets met" if met else "TARGETS MISSED")


if __name__ == "__main__":
    main()
