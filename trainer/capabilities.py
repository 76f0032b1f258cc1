"""What this host can do, as the workers will see it.

The daemon never imports mlx, so it asks a short-lived Python process running
with the workers' environment once, at start-up, in the background.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field

from tunewire.trainer.processes import blas

log = logging.getLogger(__name__)

_PROBE = """
import json, platform
info = {"mlx_version": "", "mlx_lm_version": "", "device": "cpu", "blas": "unknown"}
try:
    import mlx.core as mx
    info["mlx_version"] = getattr(mx, "__version__", "")
    info["device"] = "gpu" if mx.default_device() == mx.gpu else "cpu"
    import mlx_lm
    info["mlx_lm_version"] = getattr(mlx_lm, "__version__", "")
    from tunewire.trainer.processes.blas import blas_in_use
    info["blas"] = blas_in_use()
except Exception as exc:
    info["error"] = repr(exc)
print(json.dumps(info))
"""


@dataclass
class Capabilities:
    mlx_version: str = ""
    mlx_lm_version: str = ""
    device: str = "cpu"
    blas: str = "unknown"
    backends: list[str] = field(default_factory=lambda: ["ring"])

    @property
    def fast_blas(self) -> bool:
        return self.blas in ("openblas", "accelerate") or self.device == "gpu"


def distributed_backends() -> list[str]:
    backends = ["ring"]
    if shutil.which("mpirun"):
        backends.append("mpi")
    if shutil.which("nvidia-smi") and sys.platform == "linux":
        backends.append("nccl")
    return backends


async def probe(python: str = sys.executable) -> Capabilities:
    caps = Capabilities(backends=distributed_backends())
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-c",
            _PROBE,
            env=blas.worker_env(dict(os.environ)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
        except BaseException:  # timeout, or the daemon stopping first
            proc.kill()
            await proc.wait()
            raise
        info = json.loads(out.decode() or "{}")
    except (OSError, ValueError, asyncio.TimeoutError) as exc:
        log.warning("could not probe the worker environment: %s", exc)
        return caps
    if info.get("error"):
        log.warning("worker environment probe: %s", info["error"])
    caps.mlx_version = info.get("mlx_version", "")
    caps.mlx_lm_version = info.get("mlx_lm_version", "")
    caps.device = info.get("device", "cpu")
    caps.blas = info.get("blas", "unknown")
    return caps
