"""mlx-lm's own example config (`examples/lora_config.yaml`, a copy in fixtures/) trains as
it is, with only `model` and `data` changed; every key of mlx-lm's config is known, null
meaning absent."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest

from tunewire import tiny_model, tiny_tokenizer
from tunewire.client.train_config import ConfigError, parse_config
from tunewire.v1 import training_job_pb2 as training_job_pb

pytestmark = pytest.mark.timeout(300)

EXAMPLE = Path(__file__).parent / "fixtures" / "mlx_lm_lora_config.yaml"

# mlx-lm's CONFIG_DEFAULTS (mlx_lm/lora.py) with their default values, as YAML; with the
# example file's commented-out keys and `training_mode` of mlx-lm's preference-training
# forks, this is every key an mlx-lm config can hold.
MLX_LM_DEFAULTS = """
model: {model}
train: false
fine_tune_type: lora
optimizer: adam
optimizer_config: {{adam: {{}}, adamw: {{}}, muon: {{}}, sgd: {{}}, adafactor: {{}}}}
data: {data}
seed: 0
num_layers: 16
batch_size: 4
iters: 1000
val_batches: 25
learning_rate: 1e-5
steps_per_report: 10
steps_per_eval: 200
resume_adapter_file: null
adapter_path: adapters
save_every: 100
test: false
test_batches: 500
max_seq_length: 2048
config: null
grad_checkpoint: false
grad_accumulation_steps: 1
clear_cache_threshold: 0
lr_schedule: null
lora_parameters: {{rank: 8, dropout: 0.0, scale: 20.0}}
mask_prompt: false
report_to: null
project_name: null
trust_remote_code: false
hf_dataset: null
training_mode: normal
"""


def with_model_and_data(text: str, model: Path, data: Path) -> str:
    """The file with only its `model` and `data` lines changed."""
    text = re.sub(r"(?m)^model: .*$", f'model: "{model}"', text, count=1)
    return re.sub(r"(?m)^data: .*$", f'data: "{data}"', text, count=1)


def chat_records(n: int) -> str:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"What is {i} plus {i}?"},
                    {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
                ]
            }
        )
        + "\n"
        for i in range(n)
    )


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    """mlx-lm's data layout: a folder with train.jsonl and valid.jsonl."""
    folder = tmp_path_factory.mktemp("wikisql-like")
    (folder / "train.jsonl").write_text(chat_records(16))
    (folder / "valid.jsonl").write_text(chat_records(4))
    return folder


@pytest.fixture(scope="module")
def sixteen_blocks(tiny_model_dir) -> Path:
    """The tiny Llama with 16 blocks: the example adapts 16 (`num_layers: 16`). Built
    beside the tiny model, inside the model root the test's trainer allows."""
    out = tiny_model_dir.parent / "tiny-16"
    out.mkdir(exist_ok=True)
    preset = dataclasses.replace(tiny_model.PRESETS["tiny"], num_hidden_layers=16)
    tokenizer = tiny_tokenizer.train_tokenizer()
    ids = tiny_tokenizer.special_token_ids(tokenizer)
    vocab = tokenizer.get_vocab_size()
    tiny_model.write_safetensors(
        out / "model.safetensors", tiny_model.tensor_specs(preset, vocab), 0, "float32"
    )
    tiny_tokenizer.write_tokenizer_files(out, tokenizer, preset.max_position_embeddings)
    tiny_tokenizer.write_json(out / "generation_config.json", tiny_model.generation_config(ids))
    tiny_tokenizer.write_json(
        out / "config.json", tiny_model.model_config(preset, vocab, ids, "float32", "tiny-16", 0)
    )
    return out


def test_the_example_maps_onto_the_spec_key_by_key(data_folder, tmp_path):
    config = parse_config(
        with_model_and_data(EXAMPLE.read_text(), tmp_path / "model", data_folder), "example.yaml"
    )
    assert config.upload_train == data_folder / "train.jsonl"
    assert config.upload_validation == data_folder / "valid.jsonl"
    for key in ("train", "adapter_path", "test", "test_batches"):
        assert any(f"ignored {key!r}" in note for note in config.notes), key
    spec = config.to_spec("ds-train", "ds-valid")
    hp = spec.hyperparameters
    assert spec.method == training_job_pb.TRAINING_METHOD_LORA
    assert hp.optimizer == training_job_pb.OPTIMIZER_ADAMW and hp.seed == 0
    assert (hp.batch_size, hp.max_steps, hp.max_seq_length) == (4, 1000, 2048)
    assert hp.learning_rate == pytest.approx(1e-5) and hp.gradient_accumulation_steps == 1
    assert not hp.gradient_checkpointing
    assert (spec.lora.rank, spec.lora.alpha, spec.lora.num_layers) == (8, 160.0, 16)  # scale 20
    assert list(spec.lora.target_modules) == ["self_attn.q_proj", "self_attn.v_proj"]
    assert (spec.evaluation.interval_steps, spec.evaluation.max_batches) == (200, 25)
    assert (spec.report_interval_steps, spec.checkpointing.interval_steps) == (10, 100)


def test_every_key_of_mlx_lms_config_at_its_default_is_accepted(data_folder, tmp_path):
    text = MLX_LM_DEFAULTS.format(model=tmp_path / "model", data=data_folder)
    config = parse_config(text, "defaults.yaml")
    spec = config.to_spec("ds-train", "ds-valid")
    assert spec.hyperparameters.optimizer == training_job_pb.OPTIMIZER_ADAM
    assert spec.loss_masking == training_job_pb.LOSS_MASKING_ALL_TOKENS  # mask_prompt: false
    assert spec.lora.alpha == 160.0 and not spec.wandb.project
    assert not any("optimizer_config" in note for note in config.notes)  # all empty


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("training_mode: dpo", "training_mode 'dpo' is not supported; `normal`"),
        ("optimizer: muon", "optimizer must be one of adamw, adam, sgd, adafactor, got 'muon'"),
        (
            "optimizer_config: {adamw: {betas: [0.9, 0.98], weight_decay: 0.05}}",
            "optimizer_config.adamw.betas is not supported",
        ),
        ("hf_dataset: {path: billsum}", "Hugging Face datasets are not fetched"),
        ("report_to: swanlab", "report_to supports only 'wandb'"),
    ],
)
def test_what_tunewire_cannot_do_is_refused_with_the_reason(data_folder, tmp_path, line, message):
    text = with_model_and_data(EXAMPLE.read_text(), tmp_path / "model", data_folder)
    with pytest.raises(ConfigError) as caught:
        parse_config(text + line + "\n", "example.yaml")
    assert message in str(caught.value)


def test_the_other_optimizers_settings_are_ignored_as_mlx_lm_does(data_folder, tmp_path):
    text = with_model_and_data(EXAMPLE.read_text(), tmp_path / "model", data_folder)
    config = parse_config(text + "optimizer_config: {sgd: {weight_decay: 0.5}}\n", "x.yaml")
    assert config.to_spec().hyperparameters.weight_decay == 0.0  # unset: the server's default
    assert any("ignored 'optimizer_config.sgd'" in note for note in config.notes)


def test_adams_bias_correction_is_taken_from_mlx_lms_optimizer_config(data_folder, tmp_path):
    text = with_model_and_data(EXAMPLE.read_text(), tmp_path / "model", data_folder)
    line = "optimizer: adamw\noptimizer_config: {adamw: {bias_correction: false}}\n"
    hp = parse_config(text + line, "x.yaml").to_spec().hyperparameters
    assert hp.HasField("bias_correction") and hp.bias_correction is False


def test_the_example_trains_as_it_is(services, sixteen_blocks, data_folder):
    config = services.root / "lora_config.yaml"
    config.write_text(with_model_and_data(EXAMPLE.read_text(), sixteen_blocks, data_folder))
    started = services.cli("train", str(config), "-q")
    assert started.returncode == 0, started.stdout + started.stderr
    job_id = started.stdout.strip()
    with services.client() as client:
        deadline = time.monotonic() + 180
        job = client.get_job(job_id)
        while job.latest_metrics.step < 10:  # the first report (steps_per_report: 10)
            assert job.state not in (
                training_job_pb.JOB_STATE_FAILED,
                training_job_pb.JOB_STATE_CANCELLED,
            ), job.error.message
            assert time.monotonic() < deadline, "no training report within 180 s"
            time.sleep(0.5)
            job = client.get_job(job_id)
        assert job.state == training_job_pb.JOB_STATE_RUNNING and job.progress.total_steps == 1000
        assert job.latest_metrics.loss > 0 and job.dataset_details.validation_records == 4
        details = job.lora_details
        assert (details.rank, details.num_layers, details.scale) == (8, 16, 20.0)
        assert list(details.target_modules) == ["self_attn.q_proj", "self_attn.v_proj"]
        client.cancel_job(job_id, force=True)
