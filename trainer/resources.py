"""What this trainer offers jobs (its device and memory) and whether a job fits.

The daemon never imports mlx: the device is the configured one (`--device`),
else what MLX uses by default on this platform (Metal on Apple silicon, the
CPU elsewhere); the memory is the configured one (`--memory-gib`), else the
host's total from /proc/meminfo (the page count where there is no /proc).
A job's needs are its spec's `resources` (tunewire.spec_defaults gives the
defaults: any device, any memory).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from tunewire.v1 import training_job_pb2 as training_job_pb

DEVICES = {"cpu": training_job_pb.RESOURCE_DEVICE_CPU, "gpu": training_job_pb.RESOURCE_DEVICE_GPU}
_NAMES = {v: k for k, v in DEVICES.items()}
ANY_DEVICE = (training_job_pb.RESOURCE_DEVICE_UNSPECIFIED, training_job_pb.RESOURCE_DEVICE_ANY)


@dataclass(frozen=True)
class Offer:
    """What a trainer advertises: jobs asking for more are not claimed by it."""

    device: int  # a ResourceDevice, CPU or GPU
    memory_gib: float

    def describe(self) -> str:
        return f"{_NAMES.get(self.device, '?')}, {self.memory_gib:.1f} GiB"


def default_device() -> str:
    """MLX's default device here, without importing mlx."""
    return "gpu" if sys.platform == "darwin" and platform.machine() == "arm64" else "cpu"


def host_memory_gib(meminfo: Path = Path("/proc/meminfo")) -> float:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)


def offer(device: str = "", memory_gib: float = 0.0) -> Offer:
    """This trainer's offer: the configured values, else the host's."""
    return Offer(DEVICES[device or default_device()], memory_gib or host_memory_gib())


def needs(spec: training_job_pb.TrainingJobSpec) -> tuple[int, float]:
    """A job's device (0: any) and least memory in GiB, as the claim compares them."""
    device = spec.resources.device
    return (0 if device in ANY_DEVICE else device), float(spec.resources.min_memory_gib)


def fits(spec: training_job_pb.TrainingJobSpec, to: Offer) -> bool:
    device, memory = needs(spec)
    return device in (0, to.device) and memory <= to.memory_gib


def describe_needs(spec: training_job_pb.TrainingJobSpec) -> str:
    device, memory = needs(spec)
    return f"{_NAMES.get(device, 'any device')}, at least {memory:g} GiB"
