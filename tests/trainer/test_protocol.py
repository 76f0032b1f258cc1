"""The worker protocol on its own: every record kind survives the wire, numbers included;
versions and bad lines are clear errors; commands too. No mlx here."""

from __future__ import annotations

import math
import os

import pytest

from tunewire.reasons import Reason
from tunewire.trainer.jobs import handoff
from tunewire.trainer.protocol import codec, commands
from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.protocol.commands import Command
from tunewire.trainer.worker.events import EventWriter
from tunewire.v1 import training_job_pb2 as training_job_pb

pytestmark = pytest.mark.timeout(30)

LORA = protocol.LoraDetails(
    rank=4,
    alpha=8.0,
    scale=2.0,
    dropout=0.0,
    target_modules=["self_attn.q_proj", "mlp.down_proj"],
    num_layers=2,
    trainable_parameters=100,
    total_parameters=1000,
    trainable_percent=10.0,
)


@pytest.fixture(scope="module")
def config(tiny_model_dir, tmp_path_factory):
    """A worker config as the daemon builds one (the setup record carries it)."""
    spec = training_job_pb.TrainingJobSpec(
        model=str(tiny_model_dir), dataset=training_job_pb.DatasetSource(path="/data/train.jsonl")
    )
    job_dir = tmp_path_factory.mktemp("job")
    return handoff.config_from_spec(
        spec, job_id="job-1", job_dir=job_dir, train_path=job_dir / "train.jsonl"
    )


def one_of_each(config) -> list[protocol.Event]:
    return [
        protocol.State(state=protocol.WorkerState.STARTING, reason="loading"),
        protocol.Setup(
            total_steps=12,
            total_epochs=6.0,
            lora_details=LORA,
            dataset_details=protocol.DatasetCounts(
                train_records=8, validation_records=0, train_tokens=96
            ),
            resumed_from_step=0,
            world_size=1,
            config=config,
        ),
        protocol.Metrics(
            step=1,
            epoch=0.5,
            loss=math.nan,
            learning_rate=math.inf,
            tokens_per_second=-math.inf,
            iterations_per_second=1.0,
            trained_tokens=48,
            peak_memory_bytes=1 << 20,
            rss_bytes=1 << 24,
            all_reduce_seconds_per_step=0.0,
        ),
        protocol.Evaluation(step=2, validation_loss=800.0, perplexity=math.inf, seconds=0.1),
        protocol.Checkpoint(
            step=2,
            path="/jobs/j/checkpoints/00000002",
            train_loss=None,
            validation_loss=math.nan,
            best=True,
            size_bytes=10,
            removed=[],
        ),
        protocol.Log(level=protocol.LogLevel.WARNING, message="ünïcode\nand a newline", rank=1),
        protocol.Done(
            outcome=protocol.Outcome.EARLY_STOPPED,
            step=2,
            artifacts=protocol.Artifacts(adapter_path="/a", model_path=None, wandb_dir=None),
            best_checkpoint_step=2,
        ),
        protocol.Error(reason=Reason.OUT_OF_MEMORY, message="out of memory"),
    ]


KINDS = ["state", "setup", "metrics", "evaluation", "checkpoint", "log", "done", "error"]


def same(a: object, b: object) -> bool:
    """Equality where NaN equals NaN (records compare field by field)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips_with_nan_and_infinities_intact(kind, config):
    (event,) = [e for e in one_of_each(config) if e.kind == kind]
    line = protocol.encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = protocol.decode(line)
    assert type(back) is type(event)
    assert same(protocol.to_dict(back), protocol.to_dict(event))


def test_the_writer_and_the_reader_agree_over_a_real_pipe(config):
    sent = one_of_each(config)
    read_fd, write_fd = os.pipe()
    writer = EventWriter(write_fd, echo=None)
    for event in sent:
        writer.emit(event)
    writer.close()
    with os.fdopen(read_fd, "rb") as pipe:
        reader = protocol.Reader()
        decoded = [e for e in (reader.feed(line) for line in pipe) if e is not None]
    assert [type(e) for e in decoded] == [type(e) for e in sent]
    setup = next(e for e in decoded if isinstance(e, protocol.Setup))
    assert setup.config == config
    metrics = next(e for e in decoded if isinstance(e, protocol.Metrics))
    assert math.isnan(metrics.loss)
    assert metrics.learning_rate == math.inf and metrics.tokens_per_second == -math.inf


def test_another_protocol_version_is_an_error_naming_both():
    reader = protocol.Reader()
    with pytest.raises(protocol.ProtocolMismatch) as err:
        reader.feed(b'{"tunewire_worker_protocol": 99}\n')
    assert "version 99" in str(err.value)
    assert f"version {codec.PROTOCOL_VERSION}" in str(err.value)


def test_a_worker_without_a_header_is_a_mismatch_not_a_key_error():
    with pytest.raises(protocol.ProtocolMismatch, match="did not announce a protocol version"):
        protocol.Reader().feed(b'{"type": "state", "state": "STARTING"}\n')


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"kind": "gossip", "time": 1}', "unknown event kind 'gossip'"),
        (
            b'{"kind": "state", "time": 1, "state": "SLEEPING", "reason": ""}',
            "state.state must be one of STARTING, RUNNING",
        ),
        (b'{"kind": "state", "time": 1, "state": "RUNNING"}', "field state.reason is missing"),
        (
            b'{"kind": "log", "time": 1, "level": "INFO", "message": "m", "rank": 0, "x": 1}',
            "unknown field log.x",
        ),
        (
            b'{"kind": "done", "time": 1, "outcome": "succeeded", "step": "7", '
            b'"artifacts": {"adapter_path": null, "model_path": null, "wandb_dir": null}, '
            b'"best_checkpoint_step": 0}',
            "done.step must be a whole number, got '7'",
        ),
        (
            b'{"kind": "done", "time": 1, "outcome": "succeeded", "step": 7, '
            b'"artifacts": {"adapter_path": 3, "model_path": null, "wandb_dir": null}, '
            b'"best_checkpoint_step": 0}',
            "done.artifacts.adapter_path must be text",
        ),
    ],
)
def test_a_bad_line_is_a_protocol_error_naming_the_field(line, message):
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.decode(line)
    assert message in str(err.value)


def test_commands_round_trip_and_anything_else_is_refused():
    for command in Command:
        assert commands.decode(commands.encode(command)) is command
    with pytest.raises(protocol.ProtocolError, match="commands: cancel, stop"):
        commands.decode(b'{"command": "explode"}\n')
