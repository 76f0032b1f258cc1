"""`tunewire demo` (what `make run` runs): tunewire end to end in about a minute on two CPU cores.

    tunewire demo [--steps N] [--keep]

1. starts trainer and gateway (`tunewire server`, default ports, state in $TUNEWIRE_HOME);
2. uploads and validates the bundled Alpaca and ShareGPT examples, showing the reports;
3. fine-tunes the bundled tiny model: LoRA on the Alpaca file, QLoRA (4-bit base) on
   the ShareGPT file, each followed live with the progress bar;
4. prints each adapter's LoRA details and memory, writes the loss plots into
   $TUNEWIRE_HOME/demo/, and generates a reply with each adapter;
5. stops the services (unless --keep).

The tiny model is random and has 350 thousand parameters: the point is the
loss falling and everything around it working, not the replies' wisdom.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tunewire.addresses import DEFAULT_GATEWAY_GRPC, DEFAULT_GATEWAY_HTTP, DEFAULT_TRAINER
from tunewire.cli.common import CliError, guarded
from tunewire.cli.plot import collect_losses, write_plot
from tunewire.cli.render import memory_summary, report_text, state_name
from tunewire.cli.server import ServerOptions, busy_ports
from tunewire.cli.watch import follow_bar
from tunewire.client import Client, TunewireError
from tunewire.client.dev_key import tunewire_home
from tunewire.v1 import training_job_pb2 as training_job_pb

PROG = "tunewire demo"
ADDRESS = DEFAULT_GATEWAY_GRPC
EXAMPLES = (
    Path(__file__).resolve().parents[2] / "examples"
)  # the repository's (an editable install)
READY_TIMEOUT_SECONDS = 90.0


@dataclass
class Outcome:
    job: training_job_pb.TrainingJob
    first_loss: float = 0.0
    plot: Path | None = None
    reply: str = ""


@dataclass(frozen=True)
class DemoJob:
    """One fine-tune of the demo; small enough for two CPU cores, big enough to see the loss fall."""

    name: str
    file: str
    method: int
    steps: int
    validation_fraction: float
    prompt: str


JOBS = (
    DemoJob(
        "lora-alpaca",
        "alpaca_example.json",
        training_job_pb.TRAINING_METHOD_LORA,
        40,
        0.2,
        "Explain what learning-rate warmup is and why it helps when fine-tuning a language model.",
    ),
    DemoJob(
        "qlora-sharegpt",
        "sharegpt_example.json",
        training_job_pb.TRAINING_METHOD_QLORA,
        30,
        0.3,
        "How does byte-pair encoding turn text into tokens?",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps of each job (default 40 and 30)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the services running at the end")
    parser.add_argument("-v", "--verbose", action="store_true", help="show details of errors")
    return parser


def run_demo(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return guarded(PROG, lambda: demo(args), verbose=args.verbose)


def heading(text: str) -> None:
    print(f"\n━━ {text} " + "━" * max(3, 76 - len(text)), flush=True)


def demo(args: argparse.Namespace) -> int:
    home = tunewire_home()
    out_dir = home / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ensure_tiny_model(home / "models" / "tiny")

    heading("1. Starting trainer and gateway")
    server = start_server(home, out_dir / "server.log")
    try:
        with Client(ADDRESS, api_key="") as keyless:  # health needs no key
            wait_until_ready(keyless, server, out_dir / "server.log")
        # Made now: the server has just written its development key for us to find.
        with Client(ADDRESS) as client:
            info = client.server_info()
            print(
                f"gateway gRPC {ADDRESS}, HTTP http://{DEFAULT_GATEWAY_HTTP}, trainer {DEFAULT_TRAINER} (loopback)"
            )
            print(
                f"{info.service} {info.version}: device {info.device}, mlx {info.mlx_version}, "
                f"mlx-lm {info.mlx_lm_version}, {'OpenBLAS' if info.fast_blas else 'reference BLAS (slow)'}; "
                f"server log: {out_dir / 'server.log'}"
            )
            results = run_jobs(client, model, out_dir, args.steps)
        heading("Done")
        for outcome in results:
            job = outcome.job
            print(
                f"{job.spec.display_name} ({job.id}): {state_name(job.state)}, loss {outcome.first_loss:.3f} → "
                f"{job.latest_metrics.loss:.3f}, {memory_summary(job.latest_metrics)}"
            )
            if outcome.plot:
                print(
                    f"  plot     {outcome.plot}\n  adapter  {job.artifacts.adapter_path}\n  reply    {outcome.reply!r}"
                )
        print(
            "\nNext: the README's quick start (curl, buf curl, the Python client) and `tunewire --help`."
        )
    finally:
        if args.keep:
            print(
                f"\nservices left running (pid {server.pid}); stop them with: kill -INT {server.pid}"
            )
        else:
            stop_server(server)
    return 0 if all(o.job.state == training_job_pb.JOB_STATE_SUCCEEDED for o in results) else 1


def ensure_tiny_model(path: Path) -> Path:
    if not (path / "config.json").is_file():
        from tunewire.tiny_model import build_tiny_model

        print(f"building the tiny model in {path} (`make setup` does this once)")
        build_tiny_model(path, seed=0)
    return path


def start_server(home: Path, log_path: Path) -> subprocess.Popen:
    options = ServerOptions(
        home=home,
        grpc_listen=DEFAULT_GATEWAY_GRPC,
        http_listen=DEFAULT_GATEWAY_HTTP,
        trainer_listen=DEFAULT_TRAINER,
        keys_file=home / "keys.yaml",
        data_roots=(),
        max_running_jobs=1,
        dev_key=True,
    )
    busy = busy_ports(options)
    if busy:
        raise CliError(
            f"cannot start the services: {busy}. Is a `tunewire server` (or another `make run`) "
            "still running? Stop it and run `make run` again"
        )
    log = log_path.open("w")
    print(f"$ tunewire server --home {home}   (output in {log_path})", flush=True)
    # Its own session: a Ctrl-C here reaches the demo, which then stops the server in order.
    return subprocess.Popen(
        [sys.executable, "-m", "tunewire.cli.main", "server", "--home", str(home)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_until_ready(client: Client, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        if server.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise CliError(f"the server exited with status {server.returncode}: {tail[0]}")
        try:
            if client.health() == "SERVING":
                return
        except TunewireError:
            pass
        if time.monotonic() > deadline:
            raise CliError(
                f"the server did not become ready in {READY_TIMEOUT_SECONDS:.0f} s; see {log_path}"
            )
        time.sleep(0.2)


def run_jobs(client: Client, model: Path, out_dir: Path, steps: int | None):
    heading("2. Validating the example datasets (uploaded; checked on arrival)")
    dataset_ids = {}
    if not EXAMPLES.is_dir():
        raise CliError(
            f"the example datasets are not in {EXAMPLES}; run the demo from a clone of the repository"
        )
    for demo_job in JOBS:
        dataset = client.upload_dataset(EXAMPLES / demo_job.file)
        print(f"{dataset.id}:")
        print(report_text(dataset.report, f"examples/{demo_job.file}"))
        if not dataset.report.valid:
            raise CliError(
                f"examples/{demo_job.file} is not valid; the example files should never be"
            )
        dataset_ids[demo_job.name] = dataset.id

    heading("3. Queueing a LoRA job (Alpaca) and a QLoRA job (ShareGPT, 4-bit base)")
    jobs = []
    for demo_job in JOBS:
        spec = demo_spec(demo_job, str(model), dataset_ids[demo_job.name], steps)
        try:
            job = client.create_job(spec)
        except TunewireError as error:
            if not any(v.field == "spec.validation_fraction" for v in error.violations):
                raise
            # The example file changed and the split now holds out nothing: train without validation.
            print(f"note: {error.violations[0].description}; training without validation loss")
            spec.validation_fraction = 0.0
            spec.ClearField("evaluation")
            job = client.create_job(spec)
        spec = job.spec
        print(
            f"{job.id} {spec.display_name}: {demo_job.file}, {spec.hyperparameters.max_steps} steps of batch "
            f"{spec.hyperparameters.batch_size}, learning rate {spec.hyperparameters.learning_rate:g}, "
            f"{round(spec.validation_fraction * 100)}% held out for validation"
            + (
                f", {spec.quantization.bits}-bit base"
                if spec.method == training_job_pb.TRAINING_METHOD_QLORA
                else ""
            )
        )
        jobs.append((demo_job, job))

    results = []
    for number, (demo_job, job) in enumerate(jobs, start=4):
        heading(f"{number}. {demo_job.name}: training live (`tunewire watch {job.id}`)")
        job = follow_bar(client, job.id, 0, sys.stdout)
        outcome = Outcome(job)
        results.append(outcome)
        if job.state != training_job_pb.JOB_STATE_SUCCEEDED:
            continue
        plot_path = out_dir / f"{demo_job.name}-loss.png"
        curves = collect_losses(client, job.id, job.last_event_sequence)
        write_plot(curves, plot_path, f"{demo_job.name}: {job.id}")
        outcome.plot, outcome.first_loss = plot_path, curves.train[0][1] if curves.train else 0.0
        print(f"plot:   {plot_path}")
        reply = client.generate(
            job.id, messages=[{"role": "user", "content": demo_job.prompt}], max_tokens=40
        )
        print(
            f"prompt: {demo_job.prompt}\nreply:  {reply.text.strip()!r}  "
            f"({reply.generated_tokens} tokens, {reply.tokens_per_second:,.0f} tokens/s)"
        )
        outcome.reply = reply.text.strip()
    return results


def demo_spec(
    demo_job: DemoJob, model: str, dataset_id: str, steps: int | None
) -> training_job_pb.TrainingJobSpec:
    spec = training_job_pb.TrainingJobSpec(
        model=model,
        method=demo_job.method,
        display_name=f"demo-{demo_job.name}",
        validation_fraction=demo_job.validation_fraction,
        report_interval_steps=2,
    )
    spec.dataset.dataset_id = dataset_id
    hp = spec.hyperparameters
    hp.max_steps = steps or demo_job.steps
    hp.batch_size = 2
    # High for fine-tuning, right for a random model this small: the loss visibly falls in 30-40 steps.
    hp.learning_rate = 2e-3
    hp.max_seq_length = 256
    # Seed 2 holds out exactly one record of each example file (the split hashes seed and line).
    hp.seed = 2
    spec.lora.rank = 8
    spec.lora.alpha = 16
    spec.evaluation.interval_steps = 10
    spec.checkpointing.interval_steps = 20
    if demo_job.method == training_job_pb.TRAINING_METHOD_QLORA:
        spec.quantization.bits = 4
        spec.quantization.group_size = 32
    return spec


def stop_server(server: subprocess.Popen) -> None:
    heading("Stopping the services")
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(f"trainer and gateway stopped (exit status {server.returncode})")
