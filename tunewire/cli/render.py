"""Text for people: jobs, datasets, validation reports, sizes and durations."""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message

from tunewire import enum_words
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import training_job_pb2 as training_job_pb


def to_json(message: Message) -> str:
    """Protobuf JSON on one line (for --json output: one object per line), with the
    proto's field names and every field, as the HTTP/JSON API writes it."""
    return json_format.MessageToJson(
        message,
        indent=None,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def state_name(state: int) -> str:
    return enum_words.display_word(training_job_pb.JobState, state)


def method_name(method: int) -> str:
    return enum_words.display_word(training_job_pb.TrainingMethod, method)


def format_name(fmt: int) -> str:
    return enum_words.display_word(dataset_pb.DatasetFormat, fmt) if fmt else "unknown"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def short_model(model: str, width: int = 32) -> str:
    return model if len(model) <= width else "…" + model[-(width - 1) :]


# ---- jobs -------------------------------------------------------------------------------


def job_table(jobs: list[training_job_pb.TrainingJob]) -> str:
    rows = [("JOB", "STATE", "METHOD", "STEP", "LOSS", "MODEL", "NAME")]
    for job in jobs:
        progress = job.progress
        step = (
            f"{progress.step}/{progress.total_steps}"
            if progress.total_steps
            else str(progress.step or "-")
        )
        loss = f"{job.latest_metrics.loss:.4f}" if job.HasField("latest_metrics") else "-"
        state = state_name(job.state) + (f" #{job.queue_position}" if job.queue_position else "")
        rows.append(
            (
                job.id,
                state,
                method_name(job.spec.method),
                step,
                loss,
                short_model(job.spec.model),
                job.spec.display_name or "-",
            )
        )
    return table(rows)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def lora_summary(details: training_job_pb.LoraDetails) -> str:
    modules = ", ".join(details.target_modules) or "default modules"
    return (
        f"rank {details.rank}, alpha {details.alpha:g} (scale {details.scale:g}), dropout {details.dropout:g}, "
        f"{details.num_layers} block(s): {modules}; "
        f"{details.trainable_parameters:,} of {details.total_parameters:,} parameters trained "
        f"({details.trainable_percent:.3g}%)"
    )


def memory_summary(metrics: training_job_pb.TrainingMetrics) -> str:
    return (
        f"peak MLX memory {human_bytes(metrics.peak_memory_bytes)}, "
        f"worker RSS {human_bytes(metrics.rss_bytes)}"
    )


def job_details(job: training_job_pb.TrainingJob) -> str:
    spec, hp = job.spec, job.spec.hyperparameters
    lines = [
        f"job        {job.id}" + (f"  ({spec.display_name})" if spec.display_name else ""),
        f"state      {state_name(job.state)}"
        + (f", #{job.queue_position} in the queue" if job.queue_position else ""),
        f"owner      {job.owner}",
        f"model      {spec.model}",
        f"method     {method_name(spec.method)}"
        + (
            f", {spec.quantization.bits}-bit base"
            if spec.method == training_job_pb.TRAINING_METHOD_QLORA
            else ""
        ),
        f"training   batch {hp.batch_size}, learning rate {hp.learning_rate:g}, max length {hp.max_seq_length}, "
        + (f"{hp.max_steps} steps" if hp.max_steps else f"{hp.epochs} epoch(s)"),
    ]
    if job.distributed.world_size > 1:
        d = job.distributed
        lines.append(
            f"ranks      {d.world_size} ({enum_words.display_word(training_job_pb.DistributedBackend, d.backend)}) "
            f"on {', '.join(d.hosts)}; throughput and loss are for the whole job"
        )
    if job.HasField("dataset_details"):
        d = job.dataset_details
        lines.append(
            f"data       {format_name(d.format) if d.format else 'unknown format'}: "
            f"{d.train_records:,} training, "
            f"{d.validation_records:,} validation records"
            + (f", {d.train_tokens:,} tokens" if d.train_tokens else "")
        )
    p = job.progress
    if p.total_steps:
        running = job.state in (
            training_job_pb.JOB_STATE_STARTING,
            training_job_pb.JOB_STATE_RUNNING,
        )
        eta = (
            f", ETA {duration(p.eta.ToTimedelta().total_seconds())}"
            if running and p.HasField("eta")
            else ""
        )
        lines.append(
            f"progress   step {p.step}/{p.total_steps} ({p.percent:.0f}%), epoch {p.epoch:.2f}{eta}"
        )
    if job.HasField("latest_metrics"):
        m = job.latest_metrics
        lines.append(
            f"loss       {m.loss:.4f} at step {m.step}, {m.tokens_per_second:,.0f} tokens/s, "
            f"learning rate {m.learning_rate:.3g}"
        )
        lines.append(f"memory     {memory_summary(m)}")
    if job.HasField("latest_evaluation"):
        e = job.latest_evaluation
        lines.append(
            f"validation loss {e.validation_loss:.4f} (perplexity {e.perplexity:.2f}) at step {e.step}"
        )
    if job.HasField("lora_details") and job.lora_details.rank:
        lines.append(f"adapter    {lora_summary(job.lora_details)}")
    a = job.artifacts
    for label, value in (
        ("adapter at", a.adapter_path),
        ("model at", a.model_path),
        ("log", a.log_path),
    ):
        if value:
            lines.append(f"{label:<10} {value}")
    if job.restart_count or job.resume_count:
        lines.append(
            f"restarts   {job.restart_count} after the worker died, "
            f"{job.resume_count} resume(s) from a checkpoint"
        )
    if job.state == training_job_pb.JOB_STATE_FAILED and job.error.message:
        lines.append(f"error      {job.error.message}")
        lines.append(f"           (its log: tunewire logs {job.id} --tail 50)")
    return "\n".join(lines)


# ---- datasets ---------------------------------------------------------------------------


def dataset_table(datasets: list[dataset_pb.Dataset]) -> str:
    rows = [("DATASET", "FORMAT", "RECORDS", "SIZE", "VALID", "NAME")]
    for d in datasets:
        rows.append(
            (
                d.id,
                format_name(d.format),
                f"{d.report.total_samples:,}",
                human_bytes(d.size_bytes),
                "yes" if d.report.valid else "NO",
                d.display_name,
            )
        )
    return table(rows)


def dataset_details(d: dataset_pb.Dataset) -> str:
    lines = [
        f"dataset    {d.id}  ({d.display_name})",
        f"owner      {d.owner}",
        f"size       {human_bytes(d.size_bytes)}, sha256 {d.sha256[:16]}…",
    ]
    if d.normalized_path:
        lines.append(f"normalized {d.normalized_path}")
    return "\n".join(lines) + "\n" + report_text(d.report, d.display_name or d.id)


def report_text(report: dataset_pb.ValidationReport, name: str) -> str:
    """A validation report for a person: verdict, size, each issue as `line N field CODE: message`."""
    layout = {
        dataset_pb.FILE_LAYOUT_JSON_ARRAY: "JSON array",
        dataset_pb.FILE_LAYOUT_JSONL: "JSONL",
    }.get(report.layout, "")
    fmt = {
        dataset_pb.DATASET_FORMAT_ALPACA: "Alpaca",
        dataset_pb.DATASET_FORMAT_SHAREGPT: "ShareGPT",
        dataset_pb.DATASET_FORMAT_MESSAGES: "chat messages",
        dataset_pb.DATASET_FORMAT_OPENAI_PREFERENCE: "OpenAI preference pairs",
        dataset_pb.DATASET_FORMAT_CHOSEN_REJECTED: "prompt/chosen/rejected pairs",
    }.get(report.format, "unknown format")
    stats = report.statistics
    lines = [
        f"{name}: {'valid' if report.valid else 'INVALID'} ({fmt}{', ' + layout if layout else ''})",
        f"records: {report.total_samples:,} read, {report.valid_samples:,} valid; "
        f"{stats.turns:,} turns, {stats.characters:,} characters"
        + (f", {stats.tokens:,} tokens" if stats.tokens else ""),
    ]
    for title, issues, count in (
        ("errors", report.errors, report.error_count),
        ("warnings", report.warnings, report.warning_count),
    ):
        if count:
            shown = f" (first {len(issues)})" if len(issues) < count else ""
            lines.append(f"{title}: {count:,}{shown}")
            lines += [f"  {_issue_line(issue)}" for issue in issues]
    if report.issue_counts:
        lines.append(
            "by code: "
            + ", ".join(
                f"{c.code} {c.count:,}" for c in sorted(report.issue_counts, key=lambda c: c.code)
            )
        )
    for item in report.sample_preview:
        tokens = f" ({item.tokens} tokens, {item.trained_tokens} trained)" if item.tokens else ""
        lines.append(f"preview of line {item.conversation.line}{tokens}:")
        if item.rendered:
            lines += [f"  {text}" for text in item.rendered.splitlines()]
        else:
            for message in item.conversation.messages:
                mark = " (trained)" if message.trainable else ""
                lines.append(f"  {message.role}{mark}: {_short(message.content)}")
    return "\n".join(lines)


def _issue_line(issue: dataset_pb.DatasetIssue) -> str:
    where = f"line {issue.line}" + (f":{issue.column}" if issue.column else "")
    field = f" {issue.field}" if issue.field else ""
    return f"{where}{field} {issue.code}: {issue.message}"


def _short(text: str, limit: int = 100) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."
