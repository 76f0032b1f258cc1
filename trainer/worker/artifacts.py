"""A job's results in the formats mlx-lm reads.

Adapter methods: `JOB_DIR/adapters/adapters.safetensors` + `adapter_config.json`,
the files `mlx_lm.lora` itself writes, so `mlx_lm.load(model, adapter_path=...)`,
`mlx_lm generate --adapter-path` and `mlx_lm fuse` take them as they are.
FULL: `JOB_DIR/model/`, a whole model in the Hugging Face layout.
Both are built in a temporary folder and renamed into place.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten

from tunewire.trainer.protocol import attempt_fence, job_layout
from tunewire.trainer.protocol.config import WorkerConfig
from tunewire.trainer.worker import disk
from tunewire.trainer.worker.model_setup import AdapterSetup, LoadedModel

ADAPTERS_DIR = job_layout.ADAPTERS_DIR
MODEL_DIR = "model"


def adapter_config(
    config: WorkerConfig, setup: AdapterSetup, total_steps: int, quantized_at_load: bool
) -> dict:
    """mlx_lm.lora's adapter_config.json (its argument namespace), plus a tunewire section."""
    hp = config.hyperparameters
    quantization = (
        {
            "group_size": config.quantization.group_size,
            "bits": config.quantization.bits,
            "mode": "affine",
        }
        if quantized_at_load and config.quantization
        else None
    )
    return {
        "adapter_path": str(Path(config.job_dir) / ADAPTERS_DIR),
        "batch_size": hp.batch_size,
        "data": config.train_path,
        "fine_tune_type": setup.fine_tune_type,
        "grad_accumulation_steps": hp.gradient_accumulation_steps,
        "grad_checkpoint": hp.gradient_checkpointing,
        "iters": total_steps,
        "learning_rate": hp.learning_rate,
        "lora_parameters": setup.lora_parameters(),
        "mask_prompt": config.loss_masking != "all_tokens",
        "max_seq_length": hp.max_seq_length,
        "model": config.model,
        "num_layers": setup.num_layers,
        "optimizer": hp.optimizer,
        "save_every": config.checkpointing.interval_steps,
        "seed": hp.seed,
        "steps_per_eval": config.evaluation.interval_steps,
        "steps_per_report": config.report_interval_steps,
        "train": True,
        "val_batches": config.evaluation.max_batches or -1,
        # mlx-lm's own key for a quantized model (its config.json's): the adapter was
        # trained on the base quantized so, and belongs on that base, not the float one.
        "quantization": quantization,
        "tunewire": {
            "job_id": config.job_id,
            "method": config.method,
            "lora_alpha": config.lora.alpha if config.lora else None,
            "loss_masking": config.loss_masking,
            # The adapter was trained against this quantization of the base; mlx-lm
            # loads it onto whatever base it is given, so the base to give it is made so.
            "quantization": (
                {"bits": quantization["bits"], "group_size": quantization["group_size"]}
                if quantization
                else None
            ),
            "quantized_base": quantized_base_command(config.model, quantization),
        },
    }


def quantized_base_command(model: str, quantization: dict | None) -> str | None:
    """The mlx-lm command that makes the quantized base this adapter was trained on
    (the same nn.quantize of the same weights: bit for bit the trainer's)."""
    if not quantization:
        return None
    bits, group = quantization["bits"], quantization["group_size"]
    return (
        f"mlx_lm.convert --hf-path {model} --mlx-path {model.rstrip('/')}-{bits}bit-g{group} "
        f"-q --q-bits {bits} --q-group-size {group}"
    )


def trainable_weights(model: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def _replace_dir(tmp: Path, final: Path, attempt: str | None, what: str) -> None:
    """Renames `tmp` to `final`, fenced like a checkpoint: with `attempt` (the fence this
    worker started under) raises attempt_fence.Fenced, removing `tmp`, if a newer
    attempt owns the job's files."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    attempt_fence.land_directory(final.parent, attempt, what, tmp, final, old)


def save_adapters(
    job_dir: str | Path, model: nn.Module, config_dict: dict, attempt: str | None = None
) -> Path:
    final = Path(job_dir) / ADAPTERS_DIR
    tmp = Path(job_dir) / f".{ADAPTERS_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with disk.writing(tmp, "the adapter", final):
        tmp.mkdir(parents=True)
        mx.save_safetensors(str(tmp / "adapters.safetensors"), trainable_weights(model))
        (tmp / "adapter_config.json").write_text(
            json.dumps(config_dict, indent=4), encoding="utf-8"
        )
    _replace_dir(tmp, final, attempt, "the final adapter")
    return final


def save_full_model(job_dir: str | Path, loaded: LoadedModel, attempt: str | None = None) -> Path:
    """config.json, model.safetensors and the tokenizer files, via mlx-lm's own `save`."""
    from mlx_lm.utils import save

    final = Path(job_dir) / MODEL_DIR
    tmp = Path(job_dir) / f".{MODEL_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with disk.writing(tmp, "the fine-tuned model", final):
        save(
            tmp,
            str(loaded.path),
            loaded.model,
            loaded.tokenizer,
            copy.deepcopy(loaded.config),
            donate_model=False,
        )
    _replace_dir(tmp, final, attempt, "the fine-tuned model")
    return final
