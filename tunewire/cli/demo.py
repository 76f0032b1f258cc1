"""`tunewire demo` (what `make run` runs): a real model learns a habit you can see, in about three minutes.

    tunewire demo [--steps N] [--prompts N] [--keep]

1. starts trainer and gateway (`tunewire server`, default ports, state in $TUNEWIRE_HOME);
2. uploads and validates examples/signoff_train.jsonl: 40 short answers, each
   ending with the sign-off "~ tuned with tunewire ~", which SmolLM2 never writes;
3. fine-tunes SmolLM2-135M-Instruct (the float32 import `make setup` makes: the
   CPU trains float32 fastest) with LoRA, the loss followed live;
4. asks the base model and the fine-tuned one questions that were not in the
   training set (examples/signoff_heldout.jsonl) and prints the replies side by side;
5. writes the loss plot into $TUNEWIRE_HOME/demo/ and stops the services (unless --keep).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from tunewire.addresses import DEFAULT_GATEWAY_GRPC, DEFAULT_GATEWAY_HTTP, DEFAULT_TRAINER
from tunewire.cli import signoff
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
READY_TIMEOUT_SECONDS = 90.0
MODEL_DTYPE = "float32"


@dataclass(frozen=True)
class DemoSettings:
    """Sized for two CPU cores: the sign-off is learnt in ~30 steps of 4 short chats."""

    steps: int = 30
    batch_size: int = 4
    # High for fine-tuning a pretrained model, right for one habit in 30 steps (5e-4 is
    # half learnt by then: validation loss 1.25 against 1.08, and odd replies).
    learning_rate: float = 1e-3
    # The longest training chat (default system prompt included) is under 100 tokens.
    max_seq_length: int = 128
    rank: int = 8
    alpha: float = 16.0
    # LoRA on the last 8 of 30 blocks: the backward pass stops there, a third of the cost.
    num_layers: int = 8
    prompts: int = 3  # held-out questions asked before and after
    max_tokens: int = 48  # enough for a short answer and its sign-off
    seed: int = 0


DEFAULTS = DemoSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULTS.steps,
        help=f"training steps (default {DEFAULTS.steps})",
    )
    parser.add_argument(
        "--prompts",
        type=int,
        default=DEFAULTS.prompts,
        help=f"held-out questions to ask before and after (default {DEFAULTS.prompts}, at most 16)",
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
    if args.steps < 1 or not 1 <= args.prompts <= 16:
        raise CliError(
            f"--steps must be at least 1 and --prompts 1 to 16, got {args.steps} and {args.prompts}"
        )
    settings = DemoSettings(steps=args.steps, prompts=args.prompts)
    home = tunewire_home()
    out_dir = home / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ensure_model()
    if not signoff.TRAIN_FILE.is_file():
        raise CliError(
            f"the demo's dataset is not in {signoff.EXAMPLES}; run the demo from a clone of the repository"
        )

    heading("1. Starting trainer and gateway")
    server = start_server(home, out_dir / "server.log")
    job = None
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
            job = teach(client, str(model), out_dir, settings)
    finally:
        if args.keep:
            print(
                f"\nservices left running (pid {server.pid}); stop them with: kill -INT {server.pid}"
            )
        else:
            stop_server(server)
    return 0 if job is not None and job.state == training_job_pb.JOB_STATE_SUCCEEDED else 1


def ensure_model() -> Path:
    """The float32 SmolLM2 `make setup` imports (imported here if it is missing)."""
    from tunewire.models import smollm2

    path = smollm2.model_path(MODEL_DTYPE)
    if not smollm2.is_imported(path, MODEL_DTYPE):
        print(f"importing SmolLM2-135M-Instruct into {path} (`make setup` does this once)")
        smollm2.ensure_smollm2(dtype=MODEL_DTYPE)
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


def teach(
    client: Client, model: str, out_dir: Path, settings: DemoSettings
) -> training_job_pb.TrainingJob:
    heading("2. Validating the dataset (uploaded; checked on arrival)")
    datasets = {}
    for role, path in (("train", signoff.TRAIN_FILE), ("held out", signoff.HELD_OUT_FILE)):
        dataset = client.upload_dataset(path)
        print(f"{dataset.id} ({role}):")
        print(report_text(dataset.report, f"examples/{path.name}"))
        if not dataset.report.valid:
            raise CliError(f"examples/{path.name} is not valid; the example files should never be")
        datasets[role] = dataset.id
    print(f'every training answer ends with "{signoff.SIGN_OFF}"; SmolLM2 never writes it')

    heading("3. LoRA fine-tune of SmolLM2-135M-Instruct, live (`tunewire watch`)")
    job = client.create_job(demo_spec(model, datasets["train"], datasets["held out"], settings))
    hp, lora = job.spec.hyperparameters, job.spec.lora
    print(
        f"{job.id}: {hp.max_steps} steps of batch {hp.batch_size}, learning rate "
        f"{hp.learning_rate:g}, rank {lora.rank}, alpha {lora.alpha:g}, last {lora.num_layers} "
        f"blocks; validation loss on the {len(signoff.held_out_prompts())} held-out chats"
    )
    job = follow_bar(client, job.id, 0, sys.stdout)
    if job.state != training_job_pb.JOB_STATE_SUCCEEDED:
        print(f"{job.id} ended {state_name(job.state)}: {job.error.message}")
        return job
    plot_path = out_dir / "signoff-loss.png"
    curves = collect_losses(client, job.id, job.last_event_sequence)
    write_plot(curves, plot_path, f"SmolLM2 learns a sign-off: {job.id}")
    first = curves.train[0][1] if curves.train else 0.0
    print(
        f"loss {first:.3f} → {job.latest_metrics.loss:.3f}, {memory_summary(job.latest_metrics)}; "
        f"plot {plot_path}; adapter {job.artifacts.adapter_path}"
    )

    heading("4. Questions it was not trained on: base model | fine-tuned (greedy)")
    signed = {"base": 0, "tuned": 0}
    for prompt in signoff.held_out_prompts()[: settings.prompts]:
        messages = [{"role": "user", "content": prompt}]
        base = client.generate(model=model, messages=messages, max_tokens=settings.max_tokens)
        tuned = client.generate(job.id, messages=messages, max_tokens=settings.max_tokens)
        signed["base"] += signoff.signs_off(base.text)
        signed["tuned"] += signoff.signs_off(tuned.text)
        print(f"\n» {prompt}")
        print(side_by_side(base.text.strip(), tuned.text.strip()))
    heading("Done")
    print(
        f"signed off: base {signed['base']} of {settings.prompts}, fine-tuned "
        f"{signed['tuned']} of {settings.prompts} held-out questions "
        f"(the base replies run on until the {settings.max_tokens}-token limit)"
    )
    print(
        f'Next: tunewire generate {job.id} "your question"; the README\'s quick start; '
        "`tunewire --help`."
    )
    return job


def demo_spec(
    model: str, train_id: str, held_out_id: str, settings: DemoSettings
) -> training_job_pb.TrainingJobSpec:
    spec = training_job_pb.TrainingJobSpec(
        model=model,
        method=training_job_pb.TRAINING_METHOD_LORA,
        display_name="demo-signoff",
        report_interval_steps=2,
    )
    spec.dataset.dataset_id = train_id
    spec.validation_dataset.dataset_id = held_out_id
    hp = spec.hyperparameters
    hp.max_steps = settings.steps
    hp.batch_size = settings.batch_size
    hp.learning_rate = settings.learning_rate
    hp.max_seq_length = settings.max_seq_length
    hp.seed = settings.seed
    spec.lora.rank = settings.rank
    spec.lora.alpha = settings.alpha
    spec.lora.num_layers = settings.num_layers
    spec.evaluation.interval_steps = max(1, settings.steps // 2)
    return spec


def side_by_side(left: str, right: str) -> str:
    """Two replies in two columns as wide as the terminal allows."""
    width = max(30, (shutil.get_terminal_size((100, 24)).columns - 3) // 2)

    def column(text: str) -> list[str]:
        lines = []
        for paragraph in text.splitlines() or [""]:
            lines.extend(textwrap.wrap(paragraph, width) or [""])
        return lines

    a, b = column(left), column(right)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join(f"{x:<{width}} │ {y}" for x, y in zip(a, b))


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
