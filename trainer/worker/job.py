"""One training job from start to done: model, data, optimizer, resume, loop, artifacts."""

from __future__ import annotations

from tunewire.reasons import Reason
from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.protocol.config import WorkerConfig
from tunewire.trainer.protocol.events import Outcome
from tunewire.trainer.worker import checkpoint
from tunewire.trainer.worker.artifacts import adapter_config, save_adapters, save_full_model
from tunewire.trainer.worker.data import Dataset, TrainBatches, load_dataset
from tunewire.trainer.worker.distributed import init_world
from tunewire.trainer.worker.errors import WorkerError
from tunewire.trainer.worker.events import ControlReader, EventWriter
from tunewire.trainer.worker.loop import Trainer, restore, start_position
from tunewire.trainer.worker.model_setup import lora_details, setup_model
from tunewire.trainer.worker.optim import build_optimizer, total_steps
from tunewire.trainer.worker.packing import PackedTrainBatches
from tunewire.trainer.worker.preference_data import PairBatches, PairDataset, load_pairs
from tunewire.trainer.worker.preference_loop import PreferenceTrainer
from tunewire.trainer.worker.preference_reference import fill_reference
from tunewire.trainer.worker.wandb_log import WandbLogger


def _load_data(
    path: str, what: str, tokenizer, config: WorkerConfig, events: EventWriter
) -> Dataset:
    hp = config.hyperparameters
    try:
        data = load_dataset(path, tokenizer, config.loss_masking, hp.max_seq_length)
    except FileNotFoundError:
        raise WorkerError(Reason.DATASET_NOT_FOUND, f"{what} data not found: {path}") from None
    if data.truncated:
        events.log(
            "WARNING",
            f"{data.truncated} {what} records truncated to max_seq_length={hp.max_seq_length}",
        )
    if data.untrained:
        events.log(
            "WARNING",
            f"{data.untrained} {what} records have no trained tokens "
            f"(loss_masking={config.loss_masking}) and add nothing to the loss",
        )
    return data


def _load_pairs(
    path: str, what: str, tokenizer, config: WorkerConfig, events: EventWriter
) -> PairDataset:
    limit = config.hyperparameters.max_seq_length
    try:
        data = load_pairs(path, tokenizer, limit)
    except FileNotFoundError:
        raise WorkerError(Reason.DATASET_NOT_FOUND, f"{what} data not found: {path}") from None
    if data.truncated:
        events.log(
            "WARNING",
            f"{data.truncated} {what} pairs lost the start of their prompt to fit "
            f"max_seq_length={limit} (the replies are kept whole)",
        )
    if data.dropped:
        events.log(
            "WARNING",
            f"{data.dropped} {what} pairs left out: a reply alone is longer than "
            f"max_seq_length={limit}",
        )
    return data


def run_job(
    config: WorkerConfig,
    events: EventWriter,
    control: ControlReader,
    resume_from: str | None = None,
) -> None:
    """Trains (from the checkpoint `resume_from`, when given) and emits every event up to
    `done`; WorkerError for failures a user can fix."""
    hp = config.hyperparameters
    world = init_world(config.distributed)
    if world.is_main:
        checkpoint.remove_partial(config.job_dir)
    loaded, setup, counts = setup_model(config)
    if loaded.dequantized_layers:
        events.log(
            "INFO",
            f"{loaded.dequantized_layers} quantized layers multiply by their dequantized "
            "weights (the CPU's quantized matmul is slow)",
        )
    if loaded.widened_layers:
        events.log(
            "INFO",
            f"{loaded.widened_layers} frozen layers kept in {loaded.frozen_dtype}, widened "
            "to float32 per layer in the step (hyperparameters.half_precision_frozen_weights)",
        )
    load = _load_pairs if config.preference else _load_data
    train = load(config.train_path, "training", loaded.tokenizer, config, events)
    validation = None
    if config.validation_path:
        validation = load(config.validation_path, "validation", loaded.tokenizer, config, events)

    # The optimizer's schedule needs the step count, which needs the batches.
    batches_of = (
        PairBatches if config.preference else PackedTrainBatches if hp.packing else TrainBatches
    )
    probe = batches_of(train, hp.batch_size, hp.seed, hp.max_seq_length, world.rank, world.size)
    steps = total_steps(hp, probe.batches_per_epoch)
    optimizer = build_optimizer(hp, steps)
    state = checkpoint.TrainState()
    if config.initial_adapter_file and not resume_from:
        # mlx-lm's resume_adapter_file: the fresh adapters take these weights (their
        # names and shapes were checked against this job's by the daemon).
        loaded.model.load_weights(config.initial_adapter_file, strict=False)
        events.log("INFO", f"adapters start from {config.initial_adapter_file}")
    if resume_from:
        try:
            state = restore(resume_from, loaded.model, optimizer)
        except (FileNotFoundError, ValueError) as exc:
            raise WorkerError(
                Reason.CHECKPOINT_UNUSABLE, f"cannot resume from {resume_from}: {exc}"
            ) from None
    if config.preference and config.preference.method == "dpo":
        splits = {"train": train, **({"validation": validation} if validation else {})}
        how = fill_reference(
            loaded.model, config, splits, initial_weights=not resume_from, write=world.is_main
        )
        events.log(
            "INFO",
            f"reference log-probabilities {how} for {sum(len(d) for d in splits.values())} pairs"
            + ("" if how == "loaded" else "; the reference is the base model, no second copy"),
        )
    batches = batches_of(
        train,
        hp.batch_size,
        hp.seed,
        hp.max_seq_length,
        world.rank,
        world.size,
        position=start_position(state),
    )
    events.emit(
        protocol.Setup(
            total_steps=steps,
            total_epochs=steps * hp.gradient_accumulation_steps / batches.batches_per_epoch,
            lora_details=protocol.LoraDetails(**lora_details(config, setup, counts)),
            dataset_details=protocol.DatasetCounts(
                train_records=len(train),
                validation_records=len(validation) if validation is not None else 0,
                train_tokens=train.tokens,
            ),
            resumed_from_step=state.step,
            world_size=world.size,
            config=config,
        )
    )
    wandb = WandbLogger(config, events, enabled=world.is_main)
    adapter_cfg = adapter_config(config, setup, steps, loaded.quantized_at_load)
    trainer = (PreferenceTrainer if config.preference else Trainer)(
        config,
        loaded.model,
        optimizer,
        batches,
        validation,
        steps,
        events,
        control,
        world,
        wandb,
        adapter_cfg,
        state,
    )
    outcome = Outcome(trainer.run())

    adapter_path = model_path = None
    if world.is_main and outcome is not Outcome.INTERRUPTED:
        if outcome is Outcome.EARLY_STOPPED and state.best_step != state.step:
            # The job's result is the best model it saw, not the one that stopped improving.
            best = checkpoint.checkpoint_path(config.job_dir, state.best_step)
            loaded.model.load_weights(str(best / checkpoint.WEIGHTS_FILE), strict=False)
        if setup.fine_tune_type == "full":
            model_path = str(save_full_model(config.job_dir, loaded, trainer.attempt))
        else:
            adapter_path = str(
                save_adapters(config.job_dir, loaded.model, adapter_cfg, trainer.attempt)
            )
    wandb.finish()
    events.emit(
        protocol.Done(
            outcome=outcome,
            step=state.step,
            artifacts=protocol.Artifacts(
                adapter_path=adapter_path, model_path=model_path, wandb_dir=wandb.dir
            ),
            best_checkpoint_step=state.best_step if state.best_validation_loss is not None else 0,
        )
    )
