"""Weights & Biases logging of one job; a WandB problem never stops training.

wandb is imported only when a job asks for it. Every call is guarded: the
first failure becomes one WARNING log event and turns the logger off.
The run lives in JOB_DIR/wandb (offline runs stay there for `wandb sync`).
"""

from __future__ import annotations

from pathlib import Path

from tunewire.trainer.protocol.config import WorkerConfig
from tunewire.trainer.worker.events import EventWriter


class WandbLogger:
    def __init__(self, config: WorkerConfig, events: EventWriter, enabled: bool = True):
        self._events = events
        self._run = None
        self.dir: str | None = None
        settings = config.wandb
        if not (enabled and settings.enabled):
            return
        try:
            import wandb

            self._run = wandb.init(
                project=settings.project,
                entity=settings.entity or None,
                name=settings.name or config.job_id,
                tags=settings.tags or None,
                config=config.to_dict(),
                dir=config.job_dir,
                mode=settings.mode,
                # Resuming a job continues the same run rather than starting another.
                id=_run_id(config.job_id),
                resume="allow",
            )
            self.dir = str(Path(self._run.dir).parent)
        except Exception as exc:
            self._fail("init", exc)

    @property
    def active(self) -> bool:
        return self._run is not None

    def log(self, values: dict, step: int) -> None:
        if self._run is None:
            return
        try:
            self._run.log(values, step=step)
        except Exception as exc:
            self._fail("log", exc)

    def finish(self, exit_code: int = 0) -> None:
        if self._run is None:
            return
        try:
            self._run.finish(exit_code=exit_code)
        except Exception as exc:
            self._fail("finish", exc)
        self._run = None

    def _fail(self, what: str, exc: Exception) -> None:
        self._run = None
        self._events.log(
            "WARNING",
            f"WandB {what} failed, logging to WandB is off for this job: "
            f"{type(exc).__name__}: {exc}",
        )


def _run_id(job_id: str) -> str:
    # WandB run ids allow letters, digits, '-' and '_' only.
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in job_id)[:64] or "job"
