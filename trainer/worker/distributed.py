"""The worker's view of data-parallel training: the MLX group, and sums across ranks.

Ranks are started the way `mlx.launch` starts them (see `launch.py`); here a
rank joins the group and learns its place. With one rank there is no group
and every helper is a no-op, so the single-process path costs nothing.
"""

from __future__ import annotations

import time

import mlx.core as mx
from mlx.nn.utils import average_gradients

from tunewire.reasons import Reason
from tunewire.trainer.protocol.config import DistributedSettings
from tunewire.trainer.worker.errors import WorkerError


class World:
    def __init__(self, group=None):
        self.group = group

    @property
    def size(self) -> int:
        return self.group.size() if self.group is not None else 1

    @property
    def rank(self) -> int:
        return self.group.rank() if self.group is not None else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, x: mx.array) -> mx.array:
        if self.group is None:
            return x
        return mx.distributed.all_sum(x, group=self.group, stream=mx.cpu)

    def agree(self, flags: list[bool]) -> list[bool]:
        """True where any rank says so: every rank then stops at the same step."""
        if self.group is None:
            return flags
        summed = self.all_sum(mx.array([int(f) for f in flags], dtype=mx.int32))
        return [v > 0 for v in summed.tolist()]

    def time_all_reduce(self, like: dict) -> float:
        """Seconds for one all-reduce of a gradient-sized tree (the step's own is fused in
        the compiled step, so it is measured with a twin on report steps)."""
        if self.group is None:
            return 0.0
        probe = {k: mx.zeros_like(v) for k, v in like.items()}
        mx.eval(probe)
        tic = time.perf_counter()
        mx.eval(average_gradients(probe, group=self.group))
        return time.perf_counter() - tic


def init_world(settings: DistributedSettings) -> World:
    if settings.world_size <= 1:
        return World()
    try:
        group = mx.distributed.init(strict=True, backend=settings.backend)
    except RuntimeError as exc:
        raise WorkerError(
            Reason.DISTRIBUTED_INIT_FAILED,
            f"cannot join the {settings.backend} group of {settings.world_size} ranks: {exc}",
        ) from None
    if group.size() != settings.world_size:
        raise WorkerError(
            Reason.DISTRIBUTED_INIT_FAILED,
            f"the {settings.backend} group has {group.size()} ranks, the job asks for "
            f"{settings.world_size}",
        )
    return World(group)
