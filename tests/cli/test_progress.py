"""The progress bar: redrawn in place on a terminal, plain lines elsewhere, and a
summary made from what the events said."""

from __future__ import annotations

import io

import pytest

from tunewire.cli.progress import CLEAR_LINE, ProgressView
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

pytestmark = pytest.mark.timeout(30)


class Terminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def metrics(seq: int, step: int, loss: float) -> training_event_pb.TrainingEvent:
    return training_event_pb.TrainingEvent(
        sequence=seq,
        training_metrics=training_job_pb.TrainingMetrics(
            step=step,
            loss=loss,
            tokens_per_second=1500.0,
            iterations_per_second=2.0,
            peak_memory_bytes=48 << 20,
            rss_bytes=300 << 20,
            trained_tokens=step * 100,
        ),
    )


def state(seq: int, value: int, reason: str = "") -> training_event_pb.TrainingEvent:
    return training_event_pb.TrainingEvent(
        sequence=seq, state_change=training_event_pb.StateChange(state=value, reason=reason)
    )


def run(view: ProgressView) -> None:
    view.set_total(10)
    view.event(state(1, training_job_pb.JOB_STATE_RUNNING, "training started"))
    view.event(metrics(2, 4, 2.5))
    view.event(
        training_event_pb.TrainingEvent(
            sequence=3,
            evaluation_metrics=training_job_pb.EvaluationMetrics(
                step=4, validation_loss=2.75, perplexity=15.64
            ),
        )
    )
    view.event(metrics(4, 8, 2.0))
    view.event(
        training_event_pb.TrainingEvent(
            sequence=5,
            log=training_event_pb.LogLine(
                level=training_event_pb.LOG_LEVEL_WARNING, message="slow disk"
            ),
        )
    )
    view.event(metrics(6, 10, 1.5))
    view.event(state(7, training_job_pb.JOB_STATE_SUCCEEDED, "finished"))


def test_on_a_terminal_the_bar_is_redrawn_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = Terminal()
    run(ProgressView(out))
    text = out.getvalue()
    # Each report redraws the bar after a carriage return; other lines clear it first.
    assert text.count(CLEAR_LINE + "step ") == 3
    bar = text.split(CLEAR_LINE)[1]
    assert bar.startswith(
        "step  4/10 █████████░░░░░░░░░░░░░░░  40%  loss 2.500  1,500 tok/s  mem 48.0 MiB  ETA 0:03"
    )
    assert CLEAR_LINE + "validation loss 2.7500 (perplexity 15.64) at step 4\n" in text
    assert "val 2.750" in text.split("validation loss")[1]  # later bars show the validation loss
    assert CLEAR_LINE + "  warning: slow disk\n" in text
    assert text.endswith(
        "100%  loss 1.500  val 2.750  1,500 tok/s  mem 48.0 MiB  ETA 0:00\n[succeeded]: finished\n"
    )


def test_on_a_narrow_terminal_the_bar_is_cut_to_fit(monkeypatch):
    # A bar wider than the terminal would wrap, and "\r" would then redraw only its last part.
    monkeypatch.setenv("COLUMNS", "40")
    out = Terminal()
    run(ProgressView(out))
    bars = [
        chunk.split("\n")[0]
        for chunk in out.getvalue().split(CLEAR_LINE)
        if chunk.startswith("step")
    ]
    assert bars and all(len(bar) == 39 for bar in bars)


def test_elsewhere_every_report_is_a_plain_line():
    out = io.StringIO()
    run(ProgressView(out, tty=False))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0] == "[running]: training started"
    assert (
        lines[1]
        == "step  4/10 #########...............  40%  loss 2.500  1,500 tok/s  mem 48.0 MiB  ETA 0:03"
    )
    assert lines[-1] == "[succeeded]: finished"
    assert sum(line.startswith("step ") for line in lines) == 3


def test_summary_has_losses_memory_and_the_adapter():
    view = ProgressView(io.StringIO(), tty=False)
    run(view)
    job = training_job_pb.TrainingJob(
        id="job-1",
        state=training_job_pb.JOB_STATE_SUCCEEDED,
        progress=training_job_pb.Progress(step=10, total_steps=10),
        latest_metrics=training_job_pb.TrainingMetrics(
            peak_memory_bytes=48 << 20, rss_bytes=300 << 20
        ),
        lora_details=training_job_pb.LoraDetails(
            rank=8,
            alpha=16,
            scale=2,
            target_modules=["self_attn.q_proj"],
            num_layers=2,
            trainable_parameters=1024,
            total_parameters=100_000,
            trainable_percent=1.024,
        ),
        artifacts=training_job_pb.Artifacts(adapter_path="/h/jobs/job-1/adapters"),
    )
    job.start_time.FromSeconds(100)
    job.end_time.FromSeconds(165)
    summary = view.summary(job).splitlines()
    assert (
        summary[0]
        == "job-1 succeeded in 1:05: 10 of 10 steps, loss 2.500 → 1.500, best validation loss 2.750 at step 4"
    )
    assert (
        summary[1]
        == "  1,500 tokens/s, 1,000 tokens trained, peak MLX memory 48.0 MiB, worker RSS 300.0 MiB"
    )
    assert summary[2].startswith(
        "  adapter: rank 8, alpha 16 (scale 2), dropout 0, 2 block(s): self_attn.q_proj;"
    )
    assert summary[3] == "  adapter files: /h/jobs/job-1/adapters"


def test_a_preference_job_shows_its_rewards_in_the_bar_the_evaluations_and_the_summary():
    out = io.StringIO()
    view = ProgressView(out, tty=False)
    view.set_total(10)
    for step, accuracy in ((0, 0.5), (10, 0.95)):
        view.event(
            training_event_pb.TrainingEvent(
                evaluation_metrics=training_job_pb.EvaluationMetrics(
                    step=step,
                    validation_loss=0.693 if step == 0 else 0.2,
                    preference=training_job_pb.PreferenceMetrics(
                        reward_accuracy=accuracy, reward_margin=step / 10, chosen_reward=0.5
                    ),
                )
            )
        )
    event = metrics(3, 10, 0.31)
    event.training_metrics.preference.reward_accuracy = 0.875
    event.training_metrics.preference.reward_margin = 1.25
    view.event(event)
    text = out.getvalue()
    assert "validation loss 0.6930, reward accuracy 0.50, margin 0.000" in text
    assert "acc 0.88  margin 1.250" in text.splitlines()[-1]
    job = training_job_pb.TrainingJob(id="job-1", state=training_job_pb.JOB_STATE_SUCCEEDED)
    assert "validation reward accuracy 0.50 (step 0) → 0.95 (step 10), margin 1.000" in (
        view.summary(job)
    )


def test_the_plot_of_a_preference_job_draws_reward_accuracy_on_a_second_axis(tmp_path):
    from tunewire.cli.plot import LossCurves, write_plot

    curves = LossCurves(
        train=[(1, 0.69), (2, 0.5), (3, 0.3)],
        validation=[(0, 0.69), (3, 0.35)],
        accuracy=[(1, 0.5), (2, 0.75), (3, 1.0)],
        validation_accuracy=[(0, 0.5), (3, 0.9)],
    )
    write_plot(curves, tmp_path / "dpo.png", "dpo")
    write_plot(LossCurves(train=[(1, 2.0)]), tmp_path / "sft.png", "sft")
    for name in ("dpo.png", "sft.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "dpo.png").stat().st_size != (tmp_path / "sft.png").stat().st_size
