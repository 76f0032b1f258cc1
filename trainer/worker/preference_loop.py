"""The training loop for DPO and ORPO: the supervised loop's, with pairs and a preference loss.

Everything but the loss and what it measures is the supervised `Trainer`'s (its step too):
schedule, accumulation, checkpoints (with the data position and RNG, so a
resumed job continues with the same losses), early stopping and the best
checkpoint by validation loss. A micro-batch is B pairs as 2B rows; the step
returns the per-pair sums of `preference_loss.SUMS`, kept on the device until
a report, like the supervised loop's cross-entropy.
"""

from __future__ import annotations

import time

import mlx.core as mx

from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.worker.logprobs import trained_positions
from tunewire.trainer.worker.loop import Trainer, _perplexity
from tunewire.trainer.worker.preference_data import PairBatch, PairDataset, validation_pair_batches
from tunewire.trainer.worker.preference_loss import SUMS, preference_loss


def preference_metrics(sums: list[float], pairs: int) -> protocol.PreferenceMetrics:
    """The means over `pairs` of the step's sums, as the events carry them."""
    mean = dict(zip(SUMS, (value / max(pairs, 1) for value in sums)))
    return protocol.PreferenceMetrics(
        chosen_reward=mean["chosen_reward"],
        rejected_reward=mean["rejected_reward"],
        reward_margin=mean["chosen_reward"] - mean["rejected_reward"],
        reward_accuracy=mean["accuracy"],
        chosen_logps=mean["chosen_logps"],
        rejected_logps=mean["rejected_logps"],
        pairs=pairs,
    )


class PreferenceTrainer(Trainer):
    def __init__(self, config, model, optimizer, batches, validation: PairDataset | None, *rest):
        super().__init__(config, model, optimizer, batches, None, *rest)
        self.settings = config.preference
        self.validation = (
            validation_pair_batches(
                validation,
                self.hp.batch_size,
                config.evaluation.max_batches,
                self.hp.max_seq_length,
                self.world.rank,
                self.world.size,
            )
            if validation is not None and len(validation)
            else []
        )
        self.last_preference: protocol.PreferenceMetrics | None = None

    def _loss(self, model, tokens, positions, reference, normalizer):
        return preference_loss(model, tokens, positions, reference, normalizer, self.settings)

    def _count(self, batch: PairBatch) -> None:  # type: ignore[override]
        self._pairs += batch.global_pairs

    def _inputs(self, batch: PairBatch):  # type: ignore[override]
        normalizer = max(batch.global_pairs, 1) / self.world.size
        return (
            mx.array(batch.tokens),
            trained_positions(batch.tokens, batch.mask).arrays(),
            mx.array(batch.reference),
            mx.array(normalizer, mx.float32),
        )

    def _reset_interval(self) -> None:
        super()._reset_interval()
        self._sums = mx.zeros((len(SUMS),), mx.float32)  # preference_loss.SUMS, per pair
        self._pairs = 0

    def _interval_sums(self) -> list[float]:
        return self.world.all_sum(self._sums).tolist()

    def _interval_loss(self) -> float | None:
        if not self._steps:
            return self.last_train_loss
        return self._interval_sums()[0] / max(self._pairs, 1)

    def _extra_metrics(self) -> dict:
        """The preference means of the interval, for the metrics event (before it resets)."""
        if self._steps:
            measured = preference_metrics(self._interval_sums(), self._pairs)
            self.last_preference = measured
            fields = _wandb_fields(measured)
            self.wandb.log({f"train/{k}": v for k, v in fields.items()}, self.state.step)
        return {"preference": self.last_preference}

    def run(self) -> str:
        if self.validation and self.state.step == 0:
            self._baseline()
        return super().run()

    def _baseline(self) -> None:
        """Validation before the first step (step 0): where the rewards start (loss ln 2 and
        accuracy 0.5 for DPO). Not a candidate for the best checkpoint: there is none at 0."""
        measured = self._validation_pass()
        if measured is not None and self.world.is_main:
            loss, preference, seconds = measured
            self.events.emit(
                protocol.Evaluation(
                    step=0,
                    validation_loss=loss,
                    perplexity=_perplexity(loss),
                    seconds=seconds,
                    preference=preference,
                )
            )

    def _validation_pass(self) -> tuple[float, protocol.PreferenceMetrics, float] | None:
        tic = time.perf_counter()
        self.model.eval()
        total = mx.zeros((len(SUMS),), mx.float32)
        pairs = 0
        for batch in self.validation:
            pairs += batch.global_pairs
            if batch.tokens.shape[0]:
                _, sums = self._loss(self.model, *self._inputs(batch))
                total = total + sums
                mx.eval(total)
        self.model.train()
        if pairs == 0:
            self.events.log("WARNING", "validation data has no pairs; no validation loss")
            return None
        sums = self.world.all_sum(total).tolist()
        return sums[0] / pairs, preference_metrics(sums, pairs), time.perf_counter() - tic

    def evaluate(self) -> float | None:
        measured = self._validation_pass()
        if measured is None:
            return None
        loss, preference, seconds = measured
        state = self.state
        self._record_evaluation(loss)
        if self.world.is_main:
            self.events.emit(
                protocol.Evaluation(
                    step=state.step,
                    validation_loss=loss,
                    perplexity=_perplexity(loss),
                    seconds=seconds,
                    preference=preference,
                )
            )
        self.wandb.log(
            {"val/loss": loss, **{f"val/{k}": v for k, v in _wandb_fields(preference).items()}},
            state.step,
        )
        return loss


def _wandb_fields(m: protocol.PreferenceMetrics) -> dict:
    return {
        "rewards/chosen": m.chosen_reward,
        "rewards/rejected": m.rejected_reward,
        "rewards/margins": m.reward_margin,
        "rewards/accuracies": m.reward_accuracy,
        "logps/chosen": m.chosen_logps,
        "logps/rejected": m.rejected_logps,
    }
