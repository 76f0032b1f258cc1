"""`tunewire plot JOB -o loss.png`: training and validation loss against step (and, for DPO
and ORPO jobs, reward accuracy on a second axis).

    tunewire plot JOB [-o FILE.png] [--title TEXT]

Works on running jobs too: it plots the events so far. matplotlib runs with
its Agg backend, so no display is needed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from tunewire.cli.common import EXIT_USAGE, CliError, add_connection_flags, run_client_command
from tunewire.client import Client

PROG = "tunewire plot"


@dataclass
class LossCurves:
    train: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    accuracy: list[tuple[int, float]] = field(default_factory=list)  # preference jobs
    validation_accuracy: list[tuple[int, float]] = field(default_factory=list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("job", metavar="JOB")
    parser.add_argument("-o", "--output", default=None, help="PNG file (default JOB-loss.png)")
    parser.add_argument(
        "--title", default=None, help="plot title (default: the job's name and model)"
    )
    add_connection_flags(parser)
    return parser


def run_plot(argv: list[str]) -> int:
    return run_client_command(PROG, build_parser(), argv, plot)


def plot(client: Client, args: argparse.Namespace) -> int:
    output = Path(args.output or f"{args.job}-loss.png")
    if output.suffix.lower() != ".png":
        raise CliError(f"{output}: the plot is written as PNG; name the file *.png", EXIT_USAGE)
    job = client.get_job(args.job)
    curves = collect_losses(client, job.id, job.last_event_sequence)
    if not curves.train and not curves.validation:
        raise CliError(f"{job.id} has no loss reports yet; plot it once it has trained a few steps")
    title = (
        args.title
        or f"{job.spec.display_name or job.id} ({Path(job.spec.model).name or job.spec.model})"
    )
    write_plot(curves, output, title)
    print(
        f"wrote {output}: {len(curves.train)} training and {len(curves.validation)} validation points"
    )
    return 0


def collect_losses(client: Client, job_id: str, up_to_sequence: int) -> LossCurves:
    """The job's losses from its event log, up to `up_to_sequence` (the log so far)."""
    curves = LossCurves()
    for event in client.watch(job_id):
        kind = event.WhichOneof("payload")
        if kind == "training_metrics":
            m = event.training_metrics
            curves.train.append((m.step, m.loss))
            if m.HasField("preference"):
                curves.accuracy.append((m.step, m.preference.reward_accuracy))
        elif kind == "evaluation_metrics":
            e = event.evaluation_metrics
            curves.validation.append((e.step, e.validation_loss))
            if e.HasField("preference"):
                curves.validation_accuracy.append((e.step, e.preference.reward_accuracy))
        if event.sequence >= up_to_sequence:
            break
    return curves


def write_plot(curves: LossCurves, output: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        if curves.train:
            axes.plot(*zip(*curves.train), label="training loss", color="tab:blue", linewidth=1.6)
        if curves.validation:
            axes.plot(
                *zip(*curves.validation),
                label="validation loss",
                color="tab:orange",
                marker="o",
                linewidth=1.6,
            )
        axes.set_xlabel("step")
        preference = bool(curves.accuracy or curves.validation_accuracy)
        axes.set_ylabel("loss (per pair)" if preference else "loss (cross-entropy per token)")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        handles, labels = axes.get_legend_handles_labels()
        if preference:
            right = axes.twinx()
            for points, label, style in (
                (curves.accuracy, "reward accuracy", {"color": "tab:green"}),
                (
                    curves.validation_accuracy,
                    "validation reward accuracy",
                    {"color": "tab:red", "marker": "s"},
                ),
            ):
                if points:
                    right.plot(*zip(*points), label=label, linestyle="--", linewidth=1.2, **style)
            right.set_ylabel("reward accuracy")
            right.set_ylim(0.0, 1.05)
            more, more_labels = right.get_legend_handles_labels()
            handles, labels = handles + more, labels + more_labels
        axes.legend(handles, labels)
        figure.tight_layout()
        output.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(output, format="png")
    finally:
        plt.close(figure)
