"""Checks of a spec's distributed section and its hosts: how many ranks, where
they run, and which backend carries them."""

from __future__ import annotations

import re

from tunewire.errors import FieldViolation
from tunewire.trainer.capabilities import distributed_backends
from tunewire.trainer.jobs.check_tools import MAX_BATCH, Bad, collector, enum_ok, show
from tunewire.trainer.paths import Roots, confine
from tunewire.trainer.processes.hostfile import HostfileError
from tunewire.trainer.processes.hostfile import read_hosts as read_hostfile
from tunewire.trainer.processes.launch import is_local
from tunewire.v1 import training_job_pb2 as training_job_pb

MAX_WORLD = 1024
_HOST = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(:(\d{1,5}))?$")

Spec = training_job_pb.TrainingJobSpec


def read_hosts(spec: Spec, roots: Roots) -> tuple[list[str], list[FieldViolation]]:
    """One "host[:port]" per rank, from distributed.hosts or the hostfile (may be empty).
    A hostfile outside the data roots is PERMISSION_DENIED, raised by confine()."""
    found, bad = collector()
    dist = spec.distributed
    if dist.hostfile and not dist.hosts:
        path = confine(dist.hostfile, roots, "spec.distributed.hostfile")
        try:
            return read_hostfile(path), found
        except HostfileError as exc:
            bad("distributed.hostfile", str(exc))
            return [], found
    return list(dist.hosts), found


def check_distributed(spec: Spec, hosts: list[str], bad: Bad) -> None:
    dist = spec.distributed
    world = dist.world_size
    too_many = len(dist.hosts) > MAX_WORLD
    if too_many:
        bad("distributed.hosts", f"at most {MAX_WORLD} hosts, got {len(dist.hosts)}")
    if not 1 <= world <= MAX_WORLD:
        bad("distributed.world_size", f"must be between 1 and {MAX_WORLD}, got {world}")
    if too_many or not 1 <= world <= MAX_WORLD:
        return
    batch = spec.hyperparameters.batch_size
    if world > 1 and 1 <= batch <= MAX_BATCH and batch % world:
        bad(
            "hyperparameters.batch_size",
            f"the global batch ({batch}) must be divisible by distributed.world_size ({world})",
        )
    if dist.hosts and dist.hostfile:
        bad("distributed.hosts", "give either hosts or hostfile, not both")
    for i, host in enumerate(dist.hosts):
        m = _HOST.match(host)
        if not m or (m.group(3) and not 0 < int(m.group(3)) < 65536):
            bad(f"distributed.hosts[{i}]", f"{show(host)} is not 'host' or 'host:port'")
        elif not m.group(3) and not is_local(m.group(1)):
            bad(
                f"distributed.hosts[{i}]",
                f"{show(host)} is another machine: give the port its rank listens on (host:port)",
            )
    first = _HOST.match(hosts[0]) if hosts else None
    if hosts and not is_local(first.group(1) if first else hosts[0]):
        field = "distributed.hosts[0]" if dist.hosts else "distributed.hostfile"
        bad(
            field,
            f"rank 0 reports progress and writes checkpoints, so it runs on the trainer's own host; "
            f"list this host first (got {show(hosts[0])})",
        )
    if hosts and len(hosts) != world:
        field = "distributed.hosts" if dist.hosts else "distributed.hostfile"
        bad(field, f"one host per rank: world_size is {world}, got {len(hosts)} hosts")
    if not enum_ok(training_job_pb.DistributedBackend, dist.backend):
        bad("distributed.backend", f"unknown backend {dist.backend}")
    elif (
        world > 1
        and dist.backend == training_job_pb.DISTRIBUTED_BACKEND_MPI
        and "mpi" not in distributed_backends()
    ):
        bad("distributed.backend", "MPI is not available on this host (no mpirun); use RING")
    elif (
        world > 1
        and dist.backend == training_job_pb.DISTRIBUTED_BACKEND_NCCL
        and "nccl" not in distributed_backends()
    ):
        bad("distributed.backend", "NCCL needs CUDA GPUs, which this host does not have; use RING")
