"""The spec's defaults have one owner (the table in `tunewire/spec_defaults.py`), the proto
documents each of them in the same words, and the worker runs with exactly what the job shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tunewire import enum_words
from tunewire.spec_defaults import DEFAULTS, Context, apply_defaults, holder, is_unset
from tunewire.trainer.jobs import handoff
from tunewire.trainer.jobs.spec import resolve
from tunewire.trainer.paths import ANYWHERE
from tunewire.trainer.protocol import codec
from tunewire.trainer.protocol import events as protocol
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .jobs_helpers import watch_all

pytestmark = pytest.mark.timeout(180)

PROTOS = Path(__file__).resolve().parents[2] / "protos"
SPEC = training_job_pb.TrainingJobSpec.DESCRIPTOR


def proto_comments(tmp_path: Path) -> dict[str, str]:
    """'Message.field' → the field's leading comment, from protoc's source info."""
    out = tmp_path / "training_job.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            str(PROTOS / "tunewire/v1/training_job.proto"),
        ],
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = [f for f in files.file if f.name == "tunewire/v1/training_job.proto"]
    comments = {}
    for location in file.source_code_info.location:
        path = list(location.path)
        # [4, message, 2, field]: a field of a top-level message.
        if len(path) == 4 and path[0] == 4 and path[2] == 2:
            message = file.message_type[path[1]]
            field = message.field[path[3]]
            comments[f"{message.name}.{field.name}"] = " ".join(location.leading_comments.split())
    return comments


def spec_fields(descriptor=SPEC, prefix: str = ""):
    """(dotted path, field descriptor) of every field reachable from TrainingJobSpec."""
    for fd in descriptor.fields:
        path = prefix + fd.name
        yield path, fd
        if fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            if fd.message_type is not training_job_pb.DatasetSource.DESCRIPTOR:
                yield from spec_fields(fd.message_type, path + ".")


def field_of(path: str):
    descriptor, fd = SPEC, None
    for part in path.split("."):
        fd = descriptor.fields_by_name[part]
        descriptor = fd.message_type
    return fd


def test_the_proto_documents_every_default_in_the_tables_words(tmp_path):
    comments = proto_comments(tmp_path)
    table = {d.path: d for d in DEFAULTS}
    assert len(table) == len(DEFAULTS), "a field with two defaults"
    for path, fd in spec_fields():
        comment = comments[f"{fd.containing_type.name}.{fd.name}"]
        if path in table:
            assert f"Default: {table[path].doc}." in comment, (path, comment)
        else:
            assert "default" not in comment.lower(), f"{path} documents a default the table lacks"
    missing = set(table) - {path for path, _ in spec_fields()}
    assert not missing, missing


def test_the_dataset_library_masks_by_the_protos_words():
    from tunewire.datasets.masking import LOSS_MASKING_WORDS

    assert LOSS_MASKING_WORDS == enum_words.words(training_job_pb.LossMasking)


def test_each_constant_default_is_the_value_its_words_name():
    for default in DEFAULTS:
        if default.constant is None:
            continue
        fd, word = field_of(default.path), default.doc.split()[0]
        if fd.enum_type is not None:
            assert enum_words.number(fd.enum_type, word) == default.constant, default
        elif fd.type == fd.TYPE_BOOL:
            assert word == str(default.constant).lower(), default
        else:
            assert float(word) == default.constant, default


def test_applying_defaults_twice_changes_nothing_and_leaves_nothing_unset(tiny_model_dir):
    spec = training_job_pb.TrainingJobSpec(model=str(tiny_model_dir))
    resolved = resolve(spec, job_id="job-1", wandb_online_allowed=False, model_roots=ANYWHERE)
    full = resolved.spec
    for default in DEFAULTS:
        message, name = holder(full, default.path)
        if default.applies(full) and default.constant not in (0, 0.0, False):
            assert not is_unset(message, name), default.path
    assert apply_defaults(full, Context("job-1", resolved.model)) == full
    assert list(full.lora.target_modules) == sorted(resolved.model.block_linear_modules)
    assert full.lora.num_layers == 2 and full.hyperparameters.max_seq_length == 2048
    assert full.display_name == full.wandb.name == "job-1"
    assert full.hyperparameters.weight_decay == pytest.approx(0.01)


def test_a_full_fine_tune_has_no_adapter_section_and_its_own_learning_rate(tiny_model_dir):
    spec = training_job_pb.TrainingJobSpec(
        model=str(tiny_model_dir),
        dataset=training_job_pb.DatasetSource(path="/data/train.jsonl"),
        method=training_job_pb.TRAINING_METHOD_FULL,
        lora=training_job_pb.LoraConfig(rank=4),
        hyperparameters=training_job_pb.Hyperparameters(optimizer=training_job_pb.OPTIMIZER_SGD),
    )
    full = resolve(spec, job_id="j", wandb_online_allowed=False, model_roots=ANYWHERE).spec
    assert not full.HasField("lora") and not full.HasField("quantization")
    assert full.hyperparameters.learning_rate == pytest.approx(1e-5)
    assert full.hyperparameters.weight_decay == 0.0
    config = handoff.config_from_spec(
        spec, job_id="j", job_dir=Path("/jobs/j"), train_path=Path("/data/train.jsonl")
    )
    assert config.lora is None and config.quantization is None and config.method == "full"
    assert config.hyperparameters.optimizer == "sgd"


def shown(spec: training_job_pb.TrainingJobSpec, path: str):
    """A spec field as the worker's config spells it: enums as words, lists as lists."""
    message, name = holder(spec, path)
    value = getattr(message, name)
    fd = message.DESCRIPTOR.fields_by_name[name]
    if fd.enum_type is not None:
        return enum_words.word(fd.enum_type, value)
    return list(value) if fd.is_repeated else value


def reported_setup(log: Path) -> protocol.Setup:
    """The setup record as the worker wrote it into its log (`[setup] <its protocol line>`)."""
    (line,) = [x for x in log.read_text().splitlines() if x.startswith("[setup] ")]
    setup = protocol.decode(line.removeprefix("[setup] "))
    assert isinstance(setup, protocol.Setup)
    return setup


# Spec fields that describe the job to the server but are no part of what the worker runs.
# Read by the daemon alone: the worker never sees them (resources decide the claim).
NOT_FOR_THE_WORKER = {
    "display_name",
    "validation_fraction",
    "resources.device",
    "resources.min_memory_gib",
}


async def test_a_minimal_spec_shows_every_default_and_the_worker_ran_with_exactly_those(
    jobs, tiny_model_dir, data_dir
):
    spec = training_job_pb.TrainingJobSpec(
        model=str(tiny_model_dir),
        dataset=training_job_pb.DatasetSource(path=str(data_dir / "alpaca.json")),
    )
    created = (
        await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
    ).job
    await watch_all(jobs, created.id)
    job = (
        await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=created.id))
    ).job
    assert job.state == training_job_pb.JOB_STATE_SUCCEEDED, job.error.message
    assert created.spec == job.spec  # the spec shown at creation is the one that ran

    ran = codec.encode(reported_setup(Path(job.artifacts.log_path)).config)
    checked = 0
    for default in DEFAULTS:
        if not default.applies(job.spec):
            continue
        value = shown(job.spec, default.path)
        if default.constant is not None:  # the server applied the table's value
            fd = field_of(default.path)
            expected = default.constant
            if fd.enum_type is not None:
                expected = enum_words.word(fd.enum_type, expected)
            assert value == expected, default.path
        if default.path in NOT_FOR_THE_WORKER:
            continue
        worker_value = ran
        for part in default.path.split("."):
            worker_value = worker_value[part]
        assert (
            worker_value == pytest.approx(value)
            if isinstance(value, float)
            else (worker_value == value)
        ), (default.path, worker_value, value)
        checked += 1
    assert checked >= 30

    # The rules the table computes, as GetTrainingJob shows them and the worker ran them.
    hp = job.spec.hyperparameters
    assert (hp.epochs, hp.batch_size, hp.max_seq_length) == (1, 4, 2048)
    assert hp.learning_rate == pytest.approx(1e-4) and hp.weight_decay == pytest.approx(0.01)
    assert (job.spec.lora.rank, job.spec.lora.alpha, job.spec.lora.num_layers) == (8, 16.0, 2)
    assert job.spec.display_name == job.id == job.spec.wandb.name
    assert job.spec.wandb.mode == training_job_pb.WANDB_MODE_OFFLINE
    assert ran["model"] == job.resolved.model_path == str(Path(tiny_model_dir).resolve())
    assert ran["train_path"] == job.resolved.train_path and ran["validation_path"] is None
    assert ran["lora"]["target_modules"] == list(job.spec.lora.target_modules)
    assert list(job.lora_details.target_modules) == list(job.spec.lora.target_modules)
    assert len(job.spec.lora.target_modules) == 7
    assert ran["distributed"]["hosts"] == list(job.distributed.hosts) == ["localhost"]
