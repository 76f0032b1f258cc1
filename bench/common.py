"""Shared pieces of the trainer and distributed benchmarks: models, data, configs, figures, Markdown.

Nothing here imports mlx: the benchmark drivers stay light and start the
processes that do (`bench/processes.py`: the training worker, the daemon; and
mlx-lm's trainer) the way tunewire runs them, with the environment
`tunewire.trainer.processes.blas.worker_env` gives a worker. Scratch files live in
bench/.work/ (git-ignored).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from tunewire import tiny_model, tiny_tokenizer
from tunewire.tiny_model import Preset

WORK = Path(__file__).resolve().parent / ".work"
REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# A Llama ten times the tiny preset (4.1M parameters, the tokenizer's own
# vocabulary): big enough that a training step (about a second on two cores)
# dwarfs any per-step bookkeeping, small enough for minutes-long benchmarks.
SMALL = Preset(
    model_type="llama",
    architecture="LlamaForCausalLM",
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=768,
    max_position_embeddings=2048,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
EXTRA_PRESETS = {"small": SMALL}

_TEXT = (
    "the model learns from examples of questions and answers about data training loss rate "
    "gradient batch token layer attention weight memory speed quality result error value "
    "function return list string number file line record format check split seed report "
    "a an of to in for with on at by from is are was be this that it as or and not can will "
    "write explain describe summarize translate compare show why how what when where python code"
)
_WORDS = _TEXT.split()


def scratch_dir(name: str) -> Path:
    """bench/.work/NAME, emptied: a run keeps only its own files (logs to read if it failed)."""
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---- models -----------------------------------------------------------------------


def preset_of(name: str) -> Preset:
    if name in EXTRA_PRESETS:
        return EXTRA_PRESETS[name]
    if name in tiny_model.PRESETS:
        return tiny_model.PRESETS[name]
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")


def model_names() -> list[str]:
    return [*tiny_model.PRESETS, *EXTRA_PRESETS]


def parameter_count(name: str) -> int:
    preset = preset_of(name)
    return tiny_model.parameter_count(
        preset, preset.vocab_size or tiny_tokenizer.train_tokenizer().get_vocab_size()
    )


def model_dir(name: str, dtype: str = "float32") -> Path:
    """The random model `name` in bench/.work/models/, built on first use."""
    out = WORK / "models" / f"{name}-{dtype}"
    if (out / "config.json").is_file():
        return out
    if name in tiny_model.PRESETS:
        return tiny_model.build_tiny_model(out, seed=0, preset=name, dtype=dtype, overwrite=True)
    _build_extra(out, name, dtype)
    return out


def _build_extra(out: Path, name: str, dtype: str) -> None:
    """A model of one of EXTRA_PRESETS' shapes, from tiny_model's public building blocks."""
    preset = EXTRA_PRESETS[name]
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tokenizer = tiny_tokenizer.train_tokenizer()
    ids = tiny_tokenizer.special_token_ids(tokenizer)
    vocab = tokenizer.get_vocab_size()
    tiny_model.write_safetensors(
        staging / "model.safetensors", tiny_model.tensor_specs(preset, vocab), 0, dtype
    )
    tiny_tokenizer.write_tokenizer_files(staging, tokenizer, preset.max_position_embeddings)
    tiny_tokenizer.write_json(staging / "generation_config.json", tiny_model.generation_config(ids))
    tiny_tokenizer.write_json(
        staging / "config.json", tiny_model.model_config(preset, vocab, ids, dtype, name, 0)
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)


def remove_model(name: str, dtype: str = "float32") -> None:
    shutil.rmtree(WORK / "models" / f"{name}-{dtype}", ignore_errors=True)


# ---- data -------------------------------------------------------------------------


def write_chat_data(path: Path, records: int = 64, words: int = 400, seed: int = 0) -> Path:
    """OpenAI-style `messages` JSONL whose records are all longer than any benchmark's
    max_seq_length (about 1.5 tokens a word): truncated, every record is exactly that
    long, so every batch has the same shape and tokens per step are known."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for n in range(records):
            messages = [
                {"role": "system", "content": "You answer questions about machine learning."},
                {
                    "role": "user",
                    "content": f"[{n}] " + " ".join(rng.choices(_WORDS, k=words // 4)),
                },
                {"role": "assistant", "content": " ".join(rng.choices(_WORDS, k=words))},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def canonical_data(raw: Path) -> Path:
    """`raw` validated and normalized by the function the daemon uses for a job's data."""
    from tunewire.datasets.api import normalize_file

    result = normalize_file(raw, raw.parent / (raw.stem + "-canonical") / "train")
    if result.report.errors:
        raise RuntimeError(f"benchmark data {raw} did not validate: {result.report.errors[:3]}")
    return Path(result.train_path)


# ---- configs and environment ----------------------------------------------------


def worker_config(
    job_dir: Path,
    model: Path,
    train_path: Path,
    method: str = "lora",
    *,
    steps: int,
    batch_size: int,
    seq_length: int,
    report_every: int,
    rank: int = 8,
    world_size: int = 1,
    **spec_overrides,
):
    """The worker config the daemon would hand a job of `job_spec(...)` (plus
    `spec_overrides`, keys of the spec nested as in the proto) whose normalized data is
    `train_path`, built and written by the daemon's own functions."""
    from tunewire.client.spec import spec_from_dict
    from tunewire.trainer.jobs import handoff

    spec = job_spec(
        model,
        train_path,
        method,
        steps=steps,
        batch_size=batch_size,
        seq_length=seq_length,
        report_every=report_every,
        rank=rank,
        world_size=world_size,
    )
    if spec_overrides:
        spec.MergeFrom(spec_from_dict(spec_overrides))
    job_dir.mkdir(parents=True, exist_ok=True)
    config = handoff.config_from_spec(
        spec, job_id=job_dir.name, job_dir=job_dir, train_path=train_path
    )
    handoff.write_config(job_dir, config)
    return config


def bench_env(openblas: bool = True, threads: int | None = None, extra: dict | None = None) -> dict:
    """A worker's environment as the daemon builds it (from this one plus `extra`, e.g.
    TUNEWIRE_MALLOC); OpenBLAS off with TUNEWIRE_OPENBLAS=0."""
    from tunewire.trainer.processes.blas import worker_env

    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TUNEWIRE_OPENBLAS")}
    base.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **(extra or {}))
    if not openblas:
        base["TUNEWIRE_OPENBLAS"] = "0"
    return worker_env(base, threads=threads)


def job_spec(
    model: Path,
    data: Path,
    method: str = "lora",
    *,
    steps: int,
    batch_size: int,
    seq_length: int,
    report_every: int,
    rank: int = 8,
    world_size: int = 1,
):
    """The spec of the benchmarks' jobs (a worker config from it: `worker_config`)."""
    from tunewire import enum_words
    from tunewire.v1 import training_job_pb2 as training_job_pb

    return training_job_pb.TrainingJobSpec(
        model=str(model),
        dataset=training_job_pb.DatasetSource(path=str(data)),
        method=enum_words.number(training_job_pb.TrainingMethod, method),
        lora=training_job_pb.LoraConfig(rank=rank, alpha=2.0 * rank, num_layers=-1),
        hyperparameters=training_job_pb.Hyperparameters(
            max_steps=steps,
            batch_size=batch_size,
            learning_rate=1e-4,
            optimizer=training_job_pb.OPTIMIZER_ADAMW,
            weight_decay=0.01,
            max_seq_length=seq_length,
            seed=0,
        ),
        loss_masking=training_job_pb.LOSS_MASKING_ALL_TOKENS,
        checkpointing=training_job_pb.CheckpointConfig(interval_steps=10**9, keep_last=1),
        report_interval_steps=report_every,
        distributed=training_job_pb.DistributedConfig(world_size=world_size),
    )


# ---- figures ----------------------------------------------------------------------


@dataclass
class Rate:
    """Steady-state throughput between two metrics reports."""

    tokens: int
    seconds: float
    steps: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps


def steady_rate(reports: list[tuple[int, float, int]], warmup_steps: int) -> Rate:
    """Throughput from (step, unix time, trained tokens) reports, after `warmup_steps`.

    Wall time between the first report at or after the warm-up and the last
    one: everything the trainer does in between counts (batches, steps, reports).
    """
    window = [r for r in reports if r[0] >= warmup_steps]
    if len(window) < 2:
        raise ValueError(
            f"need two reports after step {warmup_steps}, got {[r[0] for r in reports]}"
        )
    (s0, t0, n0), (s1, t1, n1) = window[0], window[-1]
    return Rate(tokens=n1 - n0, seconds=t1 - t0, steps=s1 - s0)


def interval_rates(reports: list[tuple[int, float, int]], warmup_steps: int) -> list[float]:
    """Tokens/s of each report interval after the warm-up (report to report, wall time).

    On a shared machine other work only ever slows a run down, so the best
    intervals show the undisturbed speed and their median a typical one.
    """
    window = [r for r in reports if r[0] >= warmup_steps]
    return [(n1 - n0) / (t1 - t0) for (_, t0, n0), (_, t1, n1) in itertools.pairwise(window)]


def worker_reports(metrics: list) -> list[tuple[int, float, int]]:
    """(step, unix time, trained tokens) of a worker's metrics events (`protocol.Metrics`)."""
    return [(m.step, m.time, m.trained_tokens) for m in metrics]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(load_at_start: float | None = None) -> str:
    """Date, CPU, load and library versions, for the line under a command in RESULTS.md."""
    from tunewire.trainer.processes.blas import find_openblas

    load = os.getloadavg()[0]
    loads = (
        f"load average {load_at_start:.1f} at the start, {load:.1f} at the end"
        if load_at_start is not None
        else f"load average {load:.1f} at the end"
    )
    library = find_openblas({k: v for k, v in os.environ.items() if k != "TUNEWIRE_OPENBLAS"})
    return (
        f"{time.strftime('%Y-%m-%d')}; {cpu_name()}, {os.cpu_count()} CPUs, "
        f"{_memory_gib():.0f} GiB RAM, {loads}; mlx {version('mlx')}, mlx-lm {version('mlx-lm')}; "
        f"OpenBLAS `{library}`, OPENBLAS_NUM_THREADS {os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    )


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A Markdown table; `align` one character per column, 'l' or 'r' (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def emit(section: str, out: str | None) -> None:
    """Prints a Markdown section and, with --out, writes it there too."""
    print(section, flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(section + "\n", encoding="utf-8")
