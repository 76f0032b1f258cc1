"""The CLI end to end against real trainer and gateway processes: an mlx_lm.lora-style
config trained with --watch on the tiny model, then every command that looks at
the finished job (jobs, show, checkpoints, watch --json, plot, generate)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

from .services import CLI, write_config

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def trained(services, tiny_model_dir):
    """`tunewire train config.yaml --watch` once; the tests below read its result."""
    config = write_config(services.root / "lora.yaml", tiny_model_dir, adapter_path="adapters")
    result = services.cli("train", str(config), "--watch")
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = re.search(r"created (job-[0-9a-f]+)", result.stdout).group(1)
    return result, job_id


def test_train_with_watch_streams_progress_and_ends_with_a_summary(trained):
    result, job_id = trained
    out = result.stdout
    assert re.search(r"uploaded alpaca_example\.json as ds-[0-9a-f]+: 5 valid records", out)
    # Not a terminal: one plain progress line per report (every 2 of 12 steps), no ANSI codes.
    steps = [int(m) for m in re.findall(r"^step +(\d+)/12 ", out, re.MULTILINE)]
    assert steps == [2, 4, 6, 8, 10, 12]
    assert "\x1b[" not in out
    assert re.search(r"^validation loss \d+\.\d+ \(perplexity", out, re.MULTILINE)
    for state in ("[queued]", "[starting]", "[running]", "[succeeded]"):
        assert state in out
    summary = out[out.index("[succeeded]") :]
    assert re.search(
        rf"{job_id} succeeded in \d+:\d\d: 12 of 12 steps, loss \d+\.\d+ → \d+\.\d+", summary
    )
    assert "rank 4, alpha 8 (scale 2)" in summary  # lora_parameters.scale 2.0 × rank 4
    assert "peak MLX memory" in summary and "adapter files:" in summary
    # mlx-lm keys without meaning here are accepted and named.
    assert "ignored 'adapter_path'" in result.stderr


def test_jobs_list_show_and_checkpoints(services, trained):
    _, job_id = trained
    listing = services.cli("jobs")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith(job_id))
    assert row.split()[1:4] == ["succeeded", "lora", "12/12"]

    shown = services.cli("jobs", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert re.search(
        r"training +batch 2, learning rate 0\.002, max length 256, 12 steps", shown.stdout
    )
    assert re.search(r"data +alpaca: 4 training, 1 validation records", shown.stdout)

    as_json = json.loads(services.cli("jobs", "show", job_id, "--json").stdout)
    assert as_json["id"] == job_id and as_json["state"] == "JOB_STATE_SUCCEEDED"
    assert as_json["spec"]["lora"]["rank"] == 4

    checkpoints = services.cli("checkpoints", job_id)
    assert checkpoints.returncode == 0, checkpoints.stderr
    steps = [line.split()[0] for line in checkpoints.stdout.splitlines()[1:]]
    assert steps == ["6", "12"]


def test_logs_prints_the_workers_output(services, trained):
    _, job_id = trained
    whole = services.cli("logs", job_id)
    assert whole.returncode == 0, whole.stderr
    lines = whole.stdout.splitlines()
    assert len(lines) > 3
    tail = services.cli("logs", job_id, "--tail", "2")
    assert tail.stdout.splitlines() == lines[-2:]
    followed = services.cli("logs", job_id, "--follow")  # the job has ended: all, then exit
    assert followed.returncode == 0 and followed.stdout == whole.stdout


def test_watch_json_replays_every_event_once(services, trained):
    _, job_id = trained
    result = services.cli("watch", job_id, "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["state_change"]["state"] == "JOB_STATE_SUCCEEDED"
    assert [int(e["training_metrics"]["step"]) for e in events if "training_metrics" in e] == [
        2,
        4,
        6,
        8,
        10,
        12,
    ]

    later = services.cli("watch", job_id, "--json", "--after", str(len(events) - 2))
    assert [int(json.loads(line)["sequence"]) for line in later.stdout.splitlines()] == [
        len(events) - 1,
        len(events),
    ]


def test_plot_writes_a_png_matplotlib_reads_back(services, trained):
    _, job_id = trained
    result = services.cli("plot", job_id, "-o", "plots/loss.png")
    assert result.returncode == 0, result.stderr
    assert "6 training and 2 validation points" in result.stdout
    png = services.root / "plots" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0  # lines were drawn, not a blank canvas


def test_generate_uses_the_adapter(services, trained):
    _, job_id = trained
    result = services.cli("generate", job_id, "What is warmup?", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert "8 generated" in result.stderr and f"{job_id}/adapters" in result.stderr

    reply = json.loads(
        services.cli("generate", job_id, "What is warmup?", "--max-tokens", "8", "--json").stdout
    )
    assert reply["generated_tokens"] == 8 and reply["adapter_path"].endswith("adapters")


def test_datasets_and_remote_validation(services):
    upload = services.cli("datasets", "upload", "sharegpt_example.json")
    assert upload.returncode == 0, upload.stderr
    dataset_id = upload.stdout.split()[0]
    assert dataset_id.startswith("ds-") and "valid (ShareGPT, JSON array)" in upload.stdout

    listing = services.cli("datasets", "list")
    assert any(
        line.startswith(dataset_id) and " sharegpt " in line for line in listing.stdout.splitlines()
    )
    shown = services.cli("datasets", "show", dataset_id)
    assert "records: 3 read, 3 valid" in shown.stdout

    (services.root / "broken.jsonl").write_text(
        '{"instruction": "a", "output": "b"}\n{"instruction": 5}\n'
    )
    remote = services.cli("validate", "broken.jsonl", "--remote")
    assert remote.returncode == 1
    assert "INVALID" in remote.stdout and re.search(r"line 2 instruction WRONG_TYPE", remote.stdout)
    good = services.cli("validate", "alpaca_example.json", "--remote")
    assert good.returncode == 0 and "valid (Alpaca, JSON array)" in good.stdout


def test_cancel_a_queued_job(services, tiny_model_dir):
    """A second job queued behind a long one is cancelled at once; the first is cancelled gracefully."""
    long = write_config(
        services.root / "long.yaml",
        tiny_model_dir,
        iters=5000,
        steps_per_eval=None,
        validation_fraction=None,
        save_every=None,
    )
    first = services.cli("train", str(long), "-q")
    second = services.cli("train", str(long), "-q")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    first_id, second_id = first.stdout.strip(), second.stdout.strip()

    cancelled = services.cli("jobs", "cancel", second_id)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"{second_id}: cancelled"
    services.cli("jobs", "cancel", first_id)
    watched = services.cli("watch", first_id)
    assert watched.returncode == 1  # cancelled is not success
    assert f"{first_id} cancelled" in watched.stdout


def test_pause_and_resume_a_running_job(services, tiny_model_dir):
    """`jobs pause` checkpoints and stops a running job; `jobs resume` finishes it from there."""
    config = write_config(
        services.root / "pause.yaml",
        tiny_model_dir,
        iters=300,
        steps_per_eval=None,
        validation_fraction=None,
        save_every=2,
    )
    created = services.cli("train", str(config), "-q")
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()

    def shown() -> dict:
        return json.loads(services.cli("jobs", "show", job_id, "--json").stdout)

    deadline = time.monotonic() + 120
    while not shown().get("progress", {}).get("step"):
        assert time.monotonic() < deadline, "the job never reported a step"
        time.sleep(0.3)
    paused = services.cli("jobs", "pause", job_id)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() in (f"{job_id}: paused", f"{job_id}: running")
    deadline = time.monotonic() + 120
    while (job := shown())["state"] != "JOB_STATE_PAUSED":
        assert job["state"] == "JOB_STATE_RUNNING", job["state"]
        assert time.monotonic() < deadline, "the job never paused"
        time.sleep(0.3)
    assert 0 < int(job["progress"]["step"]) < 300

    resumed = services.cli("jobs", "resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() in (f"{job_id}: queued", f"{job_id}: starting")
    watched = services.cli("watch", job_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert int(shown()["progress"]["step"]) == 300

    again = services.cli("jobs", "resume", job_id)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "SUCCEEDED" in again.stderr


def test_ctrl_c_while_watching_leaves_the_job_running_and_says_so(services, tiny_model_dir):
    config = write_config(
        services.root / "ctrl-c.yaml",
        tiny_model_dir,
        iters=2000,
        steps_per_eval=None,
        validation_fraction=None,
        save_every=None,
    )
    watcher = subprocess.Popen(
        [*CLI, "train", str(config), "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=services.env(),
        cwd=services.root,
    )
    lines = []
    for line in watcher.stdout:
        lines.append(line)
        if line.startswith("step "):
            break
    watcher.send_signal(signal.SIGINT)
    _, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 130
    job_id = re.search(r"created (job-[0-9a-f]+)", "".join(lines)).group(1)
    assert f"stopped watching; {job_id} keeps running on the server" in err
    assert f"`tunewire watch {job_id}`" in err and f"`tunewire jobs cancel {job_id}`" in err
    assert "Traceback" not in err
    shown = services.cli("jobs", "show", job_id, "--json")
    assert json.loads(shown.stdout)["state"] == "JOB_STATE_RUNNING"
    services.cli("jobs", "cancel", job_id, "--force")
