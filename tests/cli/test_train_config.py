"""Training YAML → job spec: tunewire's own keys, an mlx_lm.lora config's keys,
and the errors for keys that are neither."""

from __future__ import annotations

import pytest

from tunewire.client import SpecError, spec_from_dict
from tunewire.client.train_config import ConfigError, parse_config
from tunewire.v1 import training_job_pb2 as training_job_pb

pytestmark = pytest.mark.timeout(30)


def test_an_mlx_lm_lora_config_maps_onto_the_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    (tmp_path / "data" / "valid.jsonl").write_text("{}\n")
    config = parse_config(
        """
model: mlx-community/Qwen2.5-0.5B-Instruct-4bit
train: true
data: data
fine_tune_type: dora
optimizer: adamw
optimizer_config:
  adamw:
    weight_decay: 0.05
num_layers: 8
batch_size: 4
iters: 600
val_batches: -1
learning_rate: 1e-5
steps_per_report: 20
steps_per_eval: 100
save_every: 200
adapter_path: adapters
max_seq_length: 1024
grad_checkpoint: true
grad_accumulation_steps: 2
seed: 7
mask_prompt: true
lr_schedule:
  name: cosine_decay
  warmup: 50
  arguments: [2e-5, 600, 1e-7]
lora_parameters:
  keys: ["self_attn.q_proj", "self_attn.v_proj"]
  rank: 16
  scale: 2.0
  dropout: 0.05
""",
        "mlx.yaml",
    )
    assert config.upload_train.resolve() == tmp_path / "data" / "train.jsonl"
    assert config.upload_validation.resolve() == tmp_path / "data" / "valid.jsonl"
    assert any("ignored 'adapter_path'" in n for n in config.notes)
    assert any("ignored 'train'" in n for n in config.notes)

    spec = config.to_spec("ds-train", "ds-valid")
    hp = spec.hyperparameters
    assert spec.model == "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
    assert (
        spec.dataset.dataset_id == "ds-train" and spec.validation_dataset.dataset_id == "ds-valid"
    )
    assert spec.method == training_job_pb.TRAINING_METHOD_DORA
    assert (spec.lora.rank, spec.lora.alpha, spec.lora.num_layers) == (
        16,
        32.0,
        8,
    )  # alpha = scale × rank
    assert spec.lora.dropout == pytest.approx(0.05)
    assert list(spec.lora.target_modules) == ["self_attn.q_proj", "self_attn.v_proj"]
    assert (hp.batch_size, hp.max_steps, hp.max_seq_length, hp.seed) == (4, 600, 1024, 7)
    assert hp.gradient_checkpointing and hp.gradient_accumulation_steps == 2
    assert hp.optimizer == training_job_pb.OPTIMIZER_ADAMW and hp.weight_decay == pytest.approx(
        0.05
    )
    # lr_schedule wins over learning_rate, as in mlx-lm.
    assert hp.learning_rate == pytest.approx(2e-5) and hp.min_learning_rate == pytest.approx(1e-7)
    assert (
        hp.learning_rate_schedule == training_job_pb.LEARNING_RATE_SCHEDULE_COSINE
        and hp.warmup_steps == 50
    )
    assert spec.loss_masking == training_job_pb.LOSS_MASKING_LAST_ASSISTANT_TURN
    assert spec.report_interval_steps == 20
    assert (spec.evaluation.interval_steps, spec.evaluation.max_batches) == (100, 0)
    assert spec.checkpointing.interval_steps == 200


def test_native_keys_nest_like_the_proto_and_take_short_enum_names():
    config = parse_config("""
model: some/model
dataset: {path: data/train.jsonl}
validationFraction: 0.1
method: QLoRA
quantization: {bits: 8, group_size: 32}
hyperparameters:
  epochs: 3
  learning_rate_schedule: linear
  optimizer: adafactor
loss_masking: all_tokens
wandb: {project: demo, mode: offline, tags: [a, b]}
metadata: {team: nlp, run: 3}
""")
    spec = config.to_spec()
    assert config.upload_train is None and spec.dataset.path == "data/train.jsonl"
    assert spec.validation_fraction == pytest.approx(0.1)
    assert spec.method == training_job_pb.TRAINING_METHOD_QLORA and spec.quantization.bits == 8
    assert spec.hyperparameters.epochs == 3
    assert (
        spec.hyperparameters.learning_rate_schedule == training_job_pb.LEARNING_RATE_SCHEDULE_LINEAR
    )
    assert spec.hyperparameters.optimizer == training_job_pb.OPTIMIZER_ADAFACTOR
    assert spec.loss_masking == training_job_pb.LOSS_MASKING_ALL_TOKENS
    assert spec.wandb.mode == training_job_pb.WANDB_MODE_OFFLINE and list(spec.wandb.tags) == [
        "a",
        "b",
    ]
    assert dict(spec.metadata) == {"team": "nlp", "run": "3"}


def test_a_quantization_section_alone_means_qlora():
    spec = parse_config(
        "model: m\ndataset: {dataset_id: ds-1}\nquantization: {bits: 4}\n"
    ).to_spec()
    assert spec.method == training_job_pb.TRAINING_METHOD_QLORA


def test_mlx_lm_resume_adapter_file_is_the_initial_adapter():
    spec = parse_config(
        "model: m\ndataset: {dataset_id: ds-1}\nresume_adapter_file: /a/adapters.safetensors\n"
    ).to_spec()
    assert spec.initial_adapter.path == "/a/adapters.safetensors"
    native = parse_config(
        "model: m\ndataset: {dataset_id: ds-1}\n"
        "initial_adapter: {job_id: job-1, checkpoint_step: 40}\n"
    ).to_spec()
    assert (native.initial_adapter.job_id, native.initial_adapter.checkpoint_step) == ("job-1", 40)


def test_a_local_model_folder_is_sent_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    spec = parse_config("model: models/tiny\ndataset: {dataset_id: ds-1}\n").to_spec()
    assert spec.model == str(tmp_path / "models" / "tiny")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model: m\ndataset: {dataset_id: d}\nbatch_sise: 2\n",
            "c.yaml:3: unknown key 'batch_sise' (did you mean 'batch_size'?)",
        ),
        (
            "model: m\ndataset: {dataset_id: d}\nlora_parameters: {rank: 8, scael: 2}\n",
            "c.yaml:3: unknown key 'lora_parameters.scael' (did you mean 'scale'?)",
        ),
        (
            "model: m\ndataset: {dataset_id: d}\nhyperparameters:\n  max_step: 3\n",
            "c.yaml:4: hyperparameters.max_step: unknown key (did you mean 'max_steps'?)",
        ),
        (
            "model: m\ndataset: {dataset_id: d}\nbatch_size: 2\nhyperparameters: {batch_size: 4}\n",
            "c.yaml:4: 'hyperparameters.batch_size' sets hyperparameters.batch_size, which 'batch_size' already sets",
        ),
        (
            "model: m\ndataset: {dataset_id: d}\niters: ten\n",
            "c.yaml:3: iters: must be a whole number, got 'ten'",
        ),
        (
            "model: m\ndataset: {dataset_id: d}\nmethod: qlroa\n",
            "c.yaml:3: method: must be one of lora, qlora, dora, full, got 'qlroa' (did you mean 'qlora'?)",
        ),
        (
            "model: m\ndataset: {dataset_id: d}\nlr_schedule: {name: step_decay, arguments: [1e-3, 10, 0.5]}\n",
            "c.yaml:3: lr_schedule 'step_decay' is not supported; use cosine_decay or linear_schedule",
        ),
        (
            "model: m\ndata: hf-org/some-dataset\n",
            "c.yaml:2: data 'hf-org/some-dataset' is not a local file or folder",
        ),
        ("dataset: {dataset_id: d}\n", "c.yaml: `model` is required"),
        ("model: m\n", "c.yaml: no training data"),
        ("- a\n- b\n", "c.yaml: expected a mapping of keys to values at the top"),
        ("", "c.yaml: the file is empty"),
        ("model: [\n", "c.yaml:2: not valid YAML"),
    ],
)
def test_mistakes_name_the_file_line_and_key(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    assert str(caught.value).startswith(message)


def test_spec_from_dict_reports_every_problem_at_once():
    with pytest.raises(SpecError) as caught:
        spec_from_dict(
            {
                "model": "m",
                "lora": {"rank": "eight"},
                "dataset": {"path": "a", "dataset_id": "b"},
                "hyperparameters": {"batchSize": 2, "batch_size": 3},
                "wandb": "project",
            }
        )
    problems = dict(caught.value.problems)
    assert problems["lora.rank"] == "must be a whole number, got 'eight'"
    assert problems["dataset.dataset_id"] == "give only one of dataset_id, path"
    assert problems["hyperparameters.batch_size"] == "given twice (also as 'batchSize')"
    assert problems["wandb"] == "must be a mapping of keys to values, got str 'project'"


def test_spec_from_dict_accepts_json_names_and_numbers_written_as_text():
    spec = spec_from_dict(
        {
            "model": "m",
            "hyperparameters": {"learningRate": "1e-4", "maxSteps": "20"},
            "method": "TRAINING_METHOD_FULL",
            "lora": {"targetModules": "q_proj"},
        }
    )
    assert (
        spec.hyperparameters.learning_rate == pytest.approx(1e-4)
        and spec.hyperparameters.max_steps == 20
    )
    assert spec.method == training_job_pb.TRAINING_METHOD_FULL and list(
        spec.lora.target_modules
    ) == ["q_proj"]


def test_an_mlx_lm_lora_preference_config_maps_onto_the_preference_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs.jsonl").write_text("{}\n")
    config = parse_config(
        """
model: mlx-community/SmolLM2-135M-Instruct
data: pairs.jsonl
train_type: lora
train_mode: dpo
beta: 0.2
dpo_cpo_loss_type: hinge
delta: 50.0
reference_model_path: null
iters: 100
"""
    )
    spec = config.to_spec(dataset_id="ds-1")
    assert spec.preference.method == training_job_pb.PREFERENCE_METHOD_DPO
    assert spec.preference.beta == pytest.approx(0.2)
    assert spec.preference.loss == training_job_pb.DPO_LOSS_HINGE
    assert spec.method == training_job_pb.TRAINING_METHOD_LORA
    assert any("ignored 'delta'" in note for note in config.notes)

    orpo = parse_config("model: m\ndataset: {dataset_id: d}\ntrain_mode: orpo\nbeta: 0.3\n")
    assert orpo.to_spec().preference.method == training_job_pb.PREFERENCE_METHOD_ORPO
    assert orpo.to_spec().preference.orpo_lambda == pytest.approx(0.3)
    native = parse_config(
        "model: m\ndataset: {dataset_id: d}\npreference: {method: dpo, loss: ipo, sft_weight: 0.1}\n"
    ).to_spec()
    assert native.preference.loss == training_job_pb.DPO_LOSS_IPO
    assert native.preference.sft_weight == pytest.approx(0.1)
    assert (
        parse_config("model: m\ndataset: {dataset_id: d}\ntrain_mode: sft\n")
        .to_spec()
        .HasField("preference")
        is False
    )


@pytest.mark.parametrize(
    "line, says",
    [
        ("train_mode: grpo", "config:3: train_mode 'grpo' is not supported"),
        ("beta: 0.1", "config:3: `beta` needs train_mode dpo or orpo"),
        ("train_mode: dpo\ndpo_cpo_loss_type: dpop", "config:4: dpo_cpo_loss_type must be one of"),
        ("reference_model_path: other/model", "DPO's reference is the base model"),
    ],
)
def test_preference_keys_tunewire_cannot_honour_are_refused_with_their_line(line, says):
    with pytest.raises(ConfigError) as err:
        parse_config(f"model: m\ndataset: {{dataset_id: d}}\n{line}\n")
    assert says in str(err.value)
