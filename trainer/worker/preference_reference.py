"""The reference log-probabilities DPO compares with: computed once per pair, kept with the job.

For the adapter methods the reference is the base model itself: the same
weights with the adapters switched off (`base_model`), so no second copy is
held. A job computes them at its start (one pass, no gradients, dropout off)
and writes them to JOB_DIR/reference_logps.json with what they depend on; a
resumed job reads them back instead of recomputing. Full fine-tuning has no
base left once trained, so it computes them from the initial weights before
its first step: precomputed, they also make the frozen reference copy
unnecessary (its memory cost is zero, not a second model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
from mlx import nn

from tunewire.reasons import Reason
from tunewire.trainer.protocol import job_layout
from tunewire.trainer.protocol.config import WorkerConfig
from tunewire.trainer.worker.errors import WorkerError
from tunewire.trainer.worker.logprobs import trained_positions
from tunewire.trainer.worker.preference_data import PairDataset, collate_pairs, pair_groups
from tunewire.trainer.worker.preference_loss import sequence_logps

REFERENCE_FILE = job_layout.REFERENCE_LOGPS_FILE


@contextmanager
def base_model(model: nn.Module) -> Iterator[None]:
    """The model with its adapters off: LoRA's B (and so its update) zero, DoRA's magnitude
    back to the base weight's norm. Restored on exit."""
    saved = []
    for _, module in model.named_modules():
        if "lora_b" not in module:
            continue
        saved.append((module, module.lora_b, module.get("m")))
        module.lora_b = mx.zeros_like(module.lora_b)
        if "m" in module and hasattr(module, "_dequantized_weight"):
            norm = mx.linalg.norm(module._dequantized_weight(), axis=1)
            module.m = norm.astype(module.m.dtype)
    try:
        yield
    finally:
        for module, lora_b, magnitude in saved:
            module.lora_b = lora_b
            if magnitude is not None:
                module.m = magnitude


def _fingerprint(config: WorkerConfig, splits: dict[str, PairDataset]) -> dict:
    return {
        "model": config.model,
        "method": config.method,
        "max_seq_length": config.hyperparameters.max_seq_length,
        "lines": {name: [r.line for r in data.records] for name, data in splits.items()},
    }


def fill_reference(
    model: nn.Module,
    config: WorkerConfig,
    splits: dict[str, PairDataset],
    initial_weights: bool,
    write: bool,
) -> str:
    """Sets every pair's `reference`; returns "loaded" (from the job's file) or "computed".

    `initial_weights`: the model has not been trained yet (not resumed), which a
    full fine-tuning job needs to compute them. `write`: this rank keeps the file.
    """
    path = Path(config.job_dir) / REFERENCE_FILE
    expected = _fingerprint(config, splits)
    saved = _read(path)
    if saved is not None and saved.get("fingerprint") == expected:
        for name, data in splits.items():
            for record, values in zip(data.records, saved["logps"][name]):
                record.reference = (values[0], values[1])
        return "loaded"
    if not initial_weights and not config.uses_adapters:
        raise WorkerError(
            Reason.CHECKPOINT_UNUSABLE,
            f"this full fine-tuning job's reference log-probabilities ({path}) are missing or "
            "were computed for other data, and the initial weights they need are trained over; "
            "start the job again",
        )
    batch_size = config.hyperparameters.batch_size
    max_seq = config.hyperparameters.max_seq_length
    model.eval()
    with base_model(model):
        for data in splits.values():
            for group in pair_groups(data, batch_size):
                batch = collate_pairs(data.records, group, 0, 1, max_seq)
                positions = trained_positions(batch.tokens, batch.mask).arrays()
                logps = sequence_logps(model, mx.array(batch.tokens), positions)
                values = logps.tolist()
                for k, i in enumerate(group):
                    data.records[i].reference = (values[k], values[len(group) + k])
    model.train()
    if write:
        logps = {name: [list(r.reference) for r in data.records] for name, data in splits.items()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": expected, "logps": logps}), encoding="utf-8")
        os.replace(tmp, path)
    return "computed"


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
