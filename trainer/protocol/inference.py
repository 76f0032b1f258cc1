"""The resident inference worker's protocol: one typed record per line, both ways.

The daemon (`trainer/inference/worker_link.py`) writes requests to the worker's
stdin; the worker (`python -m tunewire.trainer.worker.inference`) writes replies
to its protocol pipe (its stdout; whatever the libraries print goes to its log).
Every line is `{"kind": ..., <the record's fields>}`.

    daemon → worker   generate   one generation (base model, optional adapter, sampling)
                      cancel     stop the generation with this id after the current token
    worker → daemon   ready      the worker is up (sent once, first), with its report
                      token      new text of the generation with this id
                      finished   the generation ended: counts, timings, the worker's report
                      failed     the generation could not run: a message a user can act on

The worker runs one generation at a time; the daemon sends the next request
only after the previous one finished or failed. EOF on stdin: the worker exits.
This module must not import mlx: the daemon uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from tunewire.trainer.protocol import codec
from tunewire.trainer.protocol.codec import DecodeError
from tunewire.trainer.protocol.events import ProtocolError


@dataclass(frozen=True, kw_only=True)
class Quantization:
    """How the base is quantized at load, for an adapter trained on that quantization (QLoRA)."""

    bits: int
    group_size: int


@dataclass(frozen=True, kw_only=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, kw_only=True)
class Generate:
    kind: ClassVar[str] = "generate"
    id: int
    model: str  # a local model directory
    adapter_path: str | None
    quantization: Quantization | None
    prompt: str | None
    messages: list[Message] | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Cancel:
    kind: ClassVar[str] = "cancel"
    id: int


@dataclass(frozen=True, kw_only=True)
class Resident:
    model: str
    quantization_bits: int
    bytes: int


@dataclass(frozen=True, kw_only=True)
class Report:
    """The worker's own counters: what it loaded, dropped and served since it started."""

    model_loads: int
    adapter_loads: int
    evictions: int
    requests: int
    memory_budget_bytes: int
    resident: list[Resident]  # most recently used first
    nice: int


@dataclass(frozen=True, kw_only=True)
class Ready:
    kind: ClassVar[str] = "ready"
    report: Report


@dataclass(frozen=True, kw_only=True)
class Token:
    kind: ClassVar[str] = "token"
    id: int
    text: str


@dataclass(frozen=True, kw_only=True)
class Finished:
    kind: ClassVar[str] = "finished"
    id: int
    text: str  # the whole reply (stop string left out)
    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int
    generated_tokens: int
    tokens_per_second: float
    model_loaded: bool
    first_token_seconds: float
    report: Report


@dataclass(frozen=True, kw_only=True)
class Failed:
    kind: ClassVar[str] = "failed"
    id: int
    message: str
    over_budget: bool  # the model alone is larger than the memory budget
    report: Report


Request: TypeAlias = Generate | Cancel
Reply: TypeAlias = Ready | Token | Finished | Failed
REQUESTS: dict[str, type] = {r.kind: r for r in (Generate, Cancel)}
REPLIES: dict[str, type] = {r.kind: r for r in (Ready, Token, Finished, Failed)}


def encode(record: Request | Reply) -> bytes:
    return (codec.dumps({"kind": record.kind, **codec.encode(record)}) + "\n").encode()


def _decode(line: bytes, kinds: dict[str, type]) -> Any:
    try:
        data = codec.loads(line)
        if not isinstance(data, dict) or data.get("kind") not in kinds:
            raise DecodeError(f"kind must be one of {', '.join(kinds)}")
        kind = data.pop("kind")
        return codec.decode(kinds[kind], data)
    except DecodeError as exc:
        raise ProtocolError(f"not an inference record: {exc}: {line[:200]!r}") from None


def decode_request(line: str | bytes) -> Request:
    record: Request = _decode(line if isinstance(line, bytes) else line.encode(), REQUESTS)
    return record


def decode_reply(line: str | bytes) -> Reply:
    record: Reply = _decode(line if isinstance(line, bytes) else line.encode(), REPLIES)
    return record
