"""The training loop: compiled steps, gradient accumulation, evaluation, checkpoints, reports.

The step is compiled the way mlx-lm's `tuner/trainer.py` compiles it (model,
optimizer and RNG state as inputs and outputs) and the host waits on the
device once per micro-batch, as mlx-lm does; losses are read back (`.item()`)
only on report, evaluation and checkpoint steps, so the service adds no
per-step synchronisation of its own.

The loss is cross-entropy summed over the trained tokens of a micro-batch and
divided by the trained tokens of the whole global batch (known on the host),
so N ranks each holding 1/N of a batch produce exactly the gradient one rank
holding all of it would. It is computed at trained positions only, a chunk of
the vocabulary's logits at a time (`logprobs.trained_loss`), in training and
evaluation alike.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
from mlx import nn
from mlx.nn.utils import average_gradients
from mlx.utils import tree_map

from tunewire.trainer.protocol import attempt_fence
from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.protocol.config import WorkerConfig
from tunewire.trainer.worker import checkpoint
from tunewire.trainer.worker.artifacts import trainable_weights
from tunewire.trainer.worker.checkpointed_blocks import checkpoint_blocks
from tunewire.trainer.worker.data import Batch, Dataset, Position, TrainBatches, validation_batches
from tunewire.trainer.worker.distributed import World
from tunewire.trainer.worker.events import ControlReader, EventWriter
from tunewire.trainer.worker.logprobs import output_head, trained_loss, trained_positions
from tunewire.trainer.worker.resources import rss_bytes
from tunewire.trainer.worker.segment_mask import check_packing
from tunewire.trainer.worker.wandb_log import WandbLogger


class Trainer:
    def __init__(
        self,
        config: WorkerConfig,
        model: nn.Module,
        optimizer: optim.Optimizer,
        batches: TrainBatches,
        validation: Dataset | None,
        total_steps: int,
        events: EventWriter,
        control: ControlReader,
        world: World,
        wandb: WandbLogger,
        adapter_config: dict,
        state: checkpoint.TrainState,
    ):
        self.config = config
        self.hp = config.hyperparameters
        self.model = model
        self.optimizer = optimizer
        self.batches = batches
        self.total_steps = total_steps
        self.events = events
        self.control = control
        self.world = world
        self.wandb = wandb
        self.adapter_config = adapter_config
        self.state = state
        self.job_dir = Path(config.job_dir)
        # The attempt that owned the job's files when this worker started (shared queue).
        self.attempt = attempt_fence.read(self.job_dir)
        self.validation = (
            validation_batches(
                validation,
                self.hp.batch_size,
                config.evaluation.max_batches,
                self.hp.max_seq_length,
                world.rank,
                world.size,
            )
            if validation is not None and len(validation)
            else []
        )
        self.last_train_loss: float | None = state.metrics.get("train_loss")
        self.last_checkpoint_step = state.step if state.step else -1
        self._evaluation: tuple[int, float] | None = None  # (step, validation loss), latest
        self._reset_interval()

    # -- the compiled step ---------------------------------------------------

    def _loss(self, model, *inputs):
        """The step's (loss, sums to accumulate): cross-entropy here, the preference loss's
        sums in the preference loop. `inputs` are those `_inputs` makes of a batch."""
        return trained_loss(model, *inputs)

    def _build_step(self):
        """The compiled step of every method and loop: gradients of `_loss`, accumulated over
        micro-batches, averaged across ranks, clipped, applied on the last micro-batch."""
        model, optimizer, hp = self.model, self.optimizer, self.hp
        accum, max_norm = hp.gradient_accumulation_steps, hp.max_grad_norm
        loss_value_and_grad = nn.value_and_grad(model, self._loss)
        state = [model.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(*args):
            *inputs, prev_grad, do_update = args
            (_, sums), grad = loss_value_and_grad(model, *inputs)
            if prev_grad is not None:
                grad = tree_map(lambda x, y: x + y, grad, prev_grad)
            if do_update:
                grad = average_gradients(grad, group=self.world.group)
                if accum > 1:
                    grad = tree_map(lambda x: x / accum, grad)
                if max_norm > 0:
                    grad, _ = optim.clip_grad_norm(grad, max_norm)
                optimizer.update(model, grad)
                grad = None
            return sums, grad

        return step, state

    # -- the loop ---------------------------------------------------------------

    def run(self) -> str:
        """Trains to the end or until told to stop; returns the outcome for the done event."""
        if self.hp.gradient_checkpointing:
            checkpoint_blocks(self.model.layers, self.hp.gradient_checkpointing_blocks)
        # The optimizer state must exist before compiling: the compiled step captures it.
        self.optimizer.init(self.model.trainable_parameters())
        # Found outside the traced step (finding it runs the model once).
        output_head(self.model)
        if self.hp.packing:
            check_packing(self.model)
        step_fn, compiled_state = self._build_step()
        self.model.train()
        announced = False
        while self.state.step < self.total_steps:
            cancel, stop = self.world.agree(
                [self.control.cancel_requested.is_set(), self.control.stop_requested.is_set()]
            )
            if cancel or stop:
                return self._finish_early("cancelled" if cancel else "interrupted")
            if not announced:
                reason = (
                    f"resumed at step {self.state.step}" if self.state.step else "training started"
                )
                self.events.emit(protocol.State(state=protocol.WorkerState.RUNNING, reason=reason))
                announced = True
            self._train_step(step_fn, compiled_state)
            step = self.state.step
            if step % self.config.report_interval_steps == 0 or step == self.total_steps:
                self._report()
            evaluated = self._maybe_evaluate()
            # Checkpoints: at the interval, at the end, and at an evaluation only when it
            # found a new best (the best is kept by pruning), not at every evaluation.
            new_best = evaluated and self.state.best_step == step
            stopping = evaluated and self._patience_exhausted()
            interval = self.config.checkpointing.interval_steps
            at_interval = bool(interval) and step % interval == 0
            if new_best or at_interval or stopping or step == self.total_steps:
                self._checkpoint()
            if stopping:
                return "early_stopped"
        return "succeeded"

    def _train_step(self, step_fn, compiled_state) -> None:
        accum = self.hp.gradient_accumulation_steps
        grad = None
        tokens = 0
        for micro in range(accum):
            batch = self.batches.next()
            inputs = self._inputs(batch)
            # Timed like mlx-lm's loop: the step, not the batch preparation before it.
            tic = time.perf_counter()
            sums, grad = step_fn(*inputs, grad, micro == accum - 1)
            self._sums = self._sums + sums
            mx.eval(compiled_state, self._sums, grad)
            self._seconds += time.perf_counter() - tic
            self._count(batch)
            tokens += batch.global_tokens
        self.state.step += 1
        self._steps += 1
        # Like mlx-lm's n_tokens, this counts every non-padding token the step
        # processed (prompt tokens too, not only trained ones), all ranks together:
        # tokens/s and trained_tokens then compare directly with mlx-lm's.
        self._tokens += tokens
        self.state.trained_tokens += tokens

    def _count(self, batch: Batch) -> None:
        """What the interval's loss is divided by, and the trained share's counts."""
        self._trained += batch.global_trained
        self._computed += batch.global_computed

    def _inputs(self, batch: Batch):
        # Global trained tokens / ranks: average_gradients then yields the global mean.
        normalizer = max(batch.global_trained, 1) / self.world.size
        positions = trained_positions(batch.tokens, batch.mask).arrays()
        segments = None if batch.segments is None else mx.array(batch.segments)
        return mx.array(batch.tokens), positions, mx.array(normalizer, mx.float32), segments

    def _reset_interval(self) -> None:
        self._sums = mx.array(0.0, mx.float32)  # the step's sums, on the device until read
        self._trained = 0
        self._computed = 0
        self._tokens = 0
        self._steps = 0
        self._seconds = 0.0

    def _interval_loss(self) -> float | None:
        if not self._steps:
            return self.last_train_loss
        return self.world.all_sum(self._sums).item() / max(self._trained, 1)

    def _report(self) -> None:
        loss = self._interval_loss()
        self.last_train_loss = loss
        all_reduce = self.world.time_all_reduce(trainable_weights(self.model))
        seconds = max(self._seconds, 1e-9)
        metrics = {
            "step": self.state.step,
            "epoch": round(self.batches.epoch_progress, 6),
            "loss": loss,
            "learning_rate": self.optimizer.learning_rate.item(),
            "tokens_per_second": self._tokens / seconds,
            "iterations_per_second": self._steps / seconds,
            "trained_tokens": self.state.trained_tokens,
            "peak_memory_bytes": int(mx.get_peak_memory()),
            "rss_bytes": rss_bytes(),
            "all_reduce_seconds_per_step": all_reduce,
            "trained_token_share": self._trained / self._computed if self._computed else 0.0,
        }
        extra = self._extra_metrics()  # read before the interval resets
        if self.world.is_main:
            self.events.emit(protocol.Metrics(**metrics, **extra))
        self.wandb.log(
            {f"train/{k}": v for k, v in metrics.items() if k != "step"}, metrics["step"]
        )
        self._reset_interval()

    def _extra_metrics(self) -> dict:
        """Fields a subclass adds to the metrics event (the preference loop's rewards)."""
        return {}

    # -- evaluation and early stopping -------------------------------------------

    def _maybe_evaluate(self) -> bool:
        if not self.validation:
            return False
        interval, step = self.config.evaluation.interval_steps, self.state.step
        if not ((interval and step % interval == 0) or step == self.total_steps):
            return False
        self.evaluate()
        return True

    def evaluate(self) -> float | None:
        tic = time.perf_counter()
        self.model.eval()
        total = mx.array(0.0, mx.float32)
        trained = 0
        for batch in self.validation:
            trained += batch.global_trained
            if batch.tokens.shape[0]:  # a short last batch may leave a rank nothing
                _, ce_sum = trained_loss(self.model, *self._inputs(batch))
                total = total + ce_sum
                mx.eval(total)
        self.model.train()
        if trained == 0:
            self.events.log("WARNING", "validation data has no trained tokens; no validation loss")
            return None
        loss = self.world.all_sum(total).item() / trained
        state = self.state
        self._record_evaluation(loss)
        seconds = time.perf_counter() - tic
        if self.world.is_main:
            self.events.emit(
                protocol.Evaluation(
                    step=state.step,
                    validation_loss=loss,
                    perplexity=_perplexity(loss),
                    seconds=seconds,
                )
            )
        self.wandb.log({"val/loss": loss, "val/perplexity": _perplexity(loss)}, state.step)
        return loss

    def _record_evaluation(self, loss: float) -> None:
        """The latest evaluation, the patience counter and the best step, for both loops."""
        state = self.state
        self._evaluation = (state.step, loss)
        best = state.best_validation_loss
        # Patience counts evaluations without a min_delta improvement; "best" is simply
        # the lowest loss, so it always points at the best weights actually seen.
        improved = best is None or loss < best - self.config.evaluation.early_stopping.min_delta
        state.patience_counter = 0 if improved else state.patience_counter + 1
        if best is None or loss < best:
            state.best_validation_loss, state.best_step = loss, state.step

    def _patience_exhausted(self) -> bool:
        patience = self.config.evaluation.early_stopping.patience
        if patience and self.state.patience_counter >= patience:
            self.events.log(
                "INFO",
                f"early stopping at step {self.state.step}: validation loss has not improved by "
                f"{self.config.evaluation.early_stopping.min_delta} for {patience} evaluations; "
                f"best step {self.state.best_step} "
                f"(validation loss {self.state.best_validation_loss:.6g})",
            )
            return True
        return False

    # -- checkpoints ----------------------------------------------------------------

    def _finish_early(self, outcome: str) -> str:
        """Cancel or stop between steps: checkpoint what there is, unless nothing is new."""
        if self.state.step > 0 and self.last_checkpoint_step != self.state.step:
            self._checkpoint()
        return outcome

    def _checkpoint(self) -> None:
        state = self.state
        train_loss = self._interval_loss()
        validation_loss = None
        if self._evaluation is not None and self._evaluation[0] == state.step:
            validation_loss = self._evaluation[1]
        state.metrics = {"train_loss": train_loss, "validation_loss": validation_loss}
        pos = self.batches.position
        state.epoch, state.index = pos.epoch, pos.index
        state.capture_rng()
        self.last_checkpoint_step = state.step
        if not self.world.is_main:
            return
        path, size = checkpoint.save(
            self.job_dir,
            trainable_weights(self.model),
            self.optimizer.state,
            state,
            self.adapter_config,
            attempt=self.attempt,
        )
        removed = checkpoint.prune(
            self.job_dir, self.config.checkpointing.keep_last, state.best_step, self.attempt
        )
        self.events.emit(
            protocol.Checkpoint(
                step=state.step,
                path=str(path),
                train_loss=train_loss,
                validation_loss=validation_loss,
                best=validation_loss is not None and state.best_step == state.step,
                size_bytes=size,
                removed=removed,
            )
        )


def restore(
    path: str | Path, model: nn.Module, optimizer: optim.Optimizer
) -> checkpoint.TrainState:
    """Weights, optimizer state (its step counter drives the schedule) and RNG of a checkpoint."""
    weights, optimizer_state, state = checkpoint.load(path)
    model.load_weights(list(weights.items()), strict=False)
    optimizer.state = optimizer_state
    state.restore_rng()
    return state


def start_position(state: checkpoint.TrainState) -> Position:
    return Position(state.epoch, state.index)


def _perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
