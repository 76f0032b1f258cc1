"""The export formats and the tensor types each writes; no mlx, so the trainer checks requests with it."""

from __future__ import annotations

FORMATS = ("gguf-adapter", "gguf", "mlx")
# The tensor types each format can write; the first is its default ("" for mlx:
# the fused layers keep the dtype mlx-lm's fuse gives them; "f32" for the
# adapter, as llama.cpp's convert_lora_to_gguf.py writes by default).
TYPES = {
    "gguf-adapter": ("f32", "f16"),
    "gguf": ("f16", "q8_0", "bf16", "f32"),
    "mlx": ("", "f16", "bf16", "f32"),
}
# What each format needs of the job: GGUF formats a base imported from GGUF, the
# adapter format plain LoRA (llama.cpp has no DoRA magnitudes).
NEEDS_GGUF_BASE = {"gguf-adapter", "gguf"}
LORA_ONLY = {"gguf-adapter"}


class ExportError(ValueError):
    """An export that cannot be made from this job; the message says why and what would do."""


def check_request(fmt: str, kind: str) -> str:
    """The tensor type to write (the format's default for ""); ExportError if unknown."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    allowed = TYPES[fmt]
    kind = kind or allowed[0]
    if kind not in allowed:
        raise ExportError(
            f"tensor type {kind!r} is not written by format {fmt}; it takes "
            f"{', '.join(t for t in allowed if t)}"
        )
    return kind


def file_name(job_id: str, fmt: str, kind: str) -> str:
    """The export's name: job-x.lora-f32.gguf, job-x.q8_0.gguf, job-x.mlx[-f16]."""
    if fmt == "gguf-adapter":
        return f"{job_id}.lora-{kind}.gguf"
    if fmt == "gguf":
        return f"{job_id}.{kind}.gguf"
    return f"{job_id}.mlx" + (f"-{kind}" if kind else "")
