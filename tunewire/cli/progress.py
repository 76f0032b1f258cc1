"""A job's live progress as a one-line bar, and its summary when it ends.

On a terminal the bar is redrawn in place with a carriage return and an ANSI
"clear to end of line"; anything else (state changes, evaluations, logs) is
printed above it. When the output is not a terminal (a log file, CI, `make
run | tee`) every report becomes a plain line instead. That is all a progress
bar needs, so no rendering library (rich, tqdm) is used: this stays
dependency-free, and behaves the same wherever mlx-lm's extras are missing.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from tunewire.cli.render import duration, human_bytes, lora_summary, memory_summary, state_name
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

CLEAR_LINE = "\r\x1b[K"
BAR_WIDTH = 24
MIN_BAR_WIDTH = 8


@dataclass
class RunStats:
    """What the events said so far; the summary is made from it."""

    step: int = 0
    total_steps: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_second: float = 0.0
    iterations_per_second: float = 0.0
    peak_memory: int = 0
    rss: int = 0
    trained_tokens: int = 0
    running_since: float | None = None
    state: int = training_job_pb.JOB_STATE_UNSPECIFIED
    # DPO and ORPO jobs: the latest rewards of training and of validation (step, metrics).
    preference: training_job_pb.PreferenceMetrics | None = None
    validation_preference: list[tuple[int, training_job_pb.PreferenceMetrics]] = field(
        default_factory=list
    )

    @property
    def best_validation(self) -> tuple[int, float] | None:
        return min(self.validation, key=lambda sv: sv[1]) if self.validation else None


class ProgressView:
    def __init__(self, out: TextIO = sys.stdout, *, tty: bool | None = None, clock=time.monotonic):
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.clock = clock
        self.stats = RunStats()
        self._bar_shown = False
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self._fill, self._empty = ("█", "░") if encoding == "utf8" else ("#", ".")

    # ---- input ----------------------------------------------------------------------

    def set_total(self, total_steps: int) -> None:
        if total_steps:
            self.stats.total_steps = total_steps

    def event(self, event: training_event_pb.TrainingEvent) -> None:
        kind = event.WhichOneof("payload")
        if kind == "training_metrics":
            self._metrics(event.training_metrics)
        elif kind == "evaluation_metrics":
            e = event.evaluation_metrics
            self.stats.validation.append((e.step, e.validation_loss))
            if e.HasField("preference"):
                self.stats.validation_preference.append((e.step, e.preference))
                self.line(
                    f"validation loss {e.validation_loss:.4f}, {rewards(e.preference)} at step {e.step}"
                )
            else:
                self.line(
                    f"validation loss {e.validation_loss:.4f} (perplexity {e.perplexity:,.2f}) at step {e.step}"
                )
        elif kind == "state_change":
            self._state(event.state_change)
        elif kind == "checkpoint_saved":
            c = event.checkpoint_saved.checkpoint
            self.line(
                f"checkpoint at step {c.step} ({human_bytes(c.size_bytes)})"
                + (", best so far" if c.best else "")
            )
        elif kind == "log" and event.log.level != training_event_pb.LOG_LEVEL_DEBUG:
            prefix = "warning: " if event.log.level >= training_event_pb.LOG_LEVEL_WARNING else ""
            self.line(f"  {prefix}{event.log.message}")

    def note(self, text: str) -> None:
        """A line of our own (reconnecting, ...), above the bar."""
        self.line(text)

    # ---- output ---------------------------------------------------------------------

    def line(self, text: str) -> None:
        if self._bar_shown:
            self.out.write(CLEAR_LINE)
        self.out.write(text + "\n")
        if self._bar_shown:
            self.out.write(self.bar())
        self.out.flush()

    def close(self) -> None:
        """Leaves the last bar on its own line."""
        if self._bar_shown:
            self.out.write("\n")
            self.out.flush()
            self._bar_shown = False

    def bar(self) -> str:
        """`step 4/10 ████░░░░  40%  loss 2.500  val 2.750  1,500 tok/s  mem 48.0 MiB  ETA 0:03`.
        On a terminal it fits one line (a wrapped line would break the redraw):
        the bar narrows first, then the end is cut."""
        s = self.stats
        details = []
        if s.losses:
            details.append(f"loss {s.losses[-1][1]:.3f}")
        if s.validation:
            details.append(f"val {s.validation[-1][1]:.3f}")
        if s.preference is not None:
            details.append(
                f"acc {s.preference.reward_accuracy:.2f}  margin {s.preference.reward_margin:.3f}"
            )
        if s.tokens_per_second:
            details.append(f"{s.tokens_per_second:,.0f} tok/s")
        if s.peak_memory:
            details.append(f"mem {human_bytes(s.peak_memory)}")
        eta = self.eta()
        if eta is not None:
            details.append(f"ETA {duration(eta)}")
        tail = "".join(f"  {d}" for d in details)
        columns = shutil.get_terminal_size((100, 24)).columns - 1
        total = s.total_steps
        if not total:
            text = f"step {s.step}{tail}"
        else:
            head = f"step {s.step:>{len(str(total))}}/{total}"
            percent = f"{100 * s.step / total:3.0f}%"
            width = BAR_WIDTH
            if self.tty:
                room = columns - len(head) - len(percent) - len(tail) - 2
                width = max(MIN_BAR_WIDTH, min(BAR_WIDTH, room))
            done = min(width, int(width * s.step / total))
            text = f"{head} {self._fill * done}{self._empty * (width - done)} {percent}{tail}"
        return text[:columns] if self.tty else text

    def eta(self) -> float | None:
        s = self.stats
        if not s.total_steps or s.step >= s.total_steps:
            return 0.0 if s.total_steps and s.step else None
        if s.iterations_per_second > 0:
            return (s.total_steps - s.step) / s.iterations_per_second
        if s.running_since is not None and s.step:
            return (self.clock() - s.running_since) / s.step * (s.total_steps - s.step)
        return None

    def summary(self, job: training_job_pb.TrainingJob) -> str:
        s = self.stats
        took = ""
        if job.HasField("start_time") and job.HasField("end_time"):
            took = f" in {duration((job.end_time.ToDatetime() - job.start_time.ToDatetime()).total_seconds())}"
        lines = [
            f"{job.id} {state_name(job.state)}{took}: {job.progress.step} of {job.progress.total_steps} steps"
        ]
        if s.losses:
            lines[0] += f", loss {s.losses[0][1]:.3f} → {s.losses[-1][1]:.3f}"
        best = s.best_validation
        if best:
            lines[0] += f", best validation loss {best[1]:.3f} at step {best[0]}"
        if s.validation_preference:
            (first_step, first), (last_step, last) = (
                s.validation_preference[0],
                s.validation_preference[-1],
            )
            lines.append(
                f"  validation reward accuracy {first.reward_accuracy:.2f} (step {first_step}) → "
                f"{last.reward_accuracy:.2f} (step {last_step}), margin {last.reward_margin:.3f}"
            )
        if s.tokens_per_second or job.HasField("latest_metrics"):
            metrics = job.latest_metrics
            lines.append(
                f"  {s.tokens_per_second or metrics.tokens_per_second:,.0f} tokens/s, "
                f"{s.trained_tokens or metrics.trained_tokens:,} tokens trained, "
                + memory_summary(metrics)
            )
        if job.HasField("lora_details") and job.lora_details.rank:
            lines.append(f"  adapter: {lora_summary(job.lora_details)}")
        if job.artifacts.adapter_path:
            lines.append(f"  adapter files: {job.artifacts.adapter_path}")
        if job.artifacts.model_path:
            lines.append(f"  model files: {job.artifacts.model_path}")
        if job.state == training_job_pb.JOB_STATE_FAILED:
            lines.append(
                f"  error: {job.error.message}"
                + (f" (log: {job.artifacts.log_path})" if job.artifacts.log_path else "")
            )
        return "\n".join(lines)

    # ---- internals ------------------------------------------------------------------

    def _metrics(self, m: training_job_pb.TrainingMetrics) -> None:
        s = self.stats
        s.step = m.step
        s.losses.append((m.step, m.loss))
        s.tokens_per_second = m.tokens_per_second
        s.iterations_per_second = m.iterations_per_second
        s.peak_memory = max(s.peak_memory, m.peak_memory_bytes)
        s.rss = max(s.rss, m.rss_bytes)
        s.trained_tokens = m.trained_tokens
        if m.HasField("preference"):
            s.preference = m.preference
        if self.tty:
            self.out.write(CLEAR_LINE + self.bar())
            self._bar_shown = True
            self.out.flush()
        else:
            self.line(self.bar())

    def _state(self, change: training_event_pb.StateChange) -> None:
        self.stats.state = change.state
        if change.state == training_job_pb.JOB_STATE_RUNNING and self.stats.running_since is None:
            self.stats.running_since = self.clock()
        reason = f": {change.reason}" if change.reason else ""
        if change.state == training_job_pb.JOB_STATE_FAILED and change.error.message:
            reason = f": {change.error.message}"
        if change.state in (
            training_job_pb.JOB_STATE_SUCCEEDED,
            training_job_pb.JOB_STATE_FAILED,
            training_job_pb.JOB_STATE_CANCELLED,
        ):
            self.close()
        self.line(f"[{state_name(change.state)}]{reason}")


def rewards(m: training_job_pb.PreferenceMetrics) -> str:
    """`reward accuracy 0.92, margin 1.234 (chosen 0.8, rejected -0.4)`."""
    return (
        f"reward accuracy {m.reward_accuracy:.2f}, margin {m.reward_margin:.3f} "
        f"(chosen {m.chosen_reward:.3f}, rejected {m.rejected_reward:.3f})"
    )
