"""What the daemon can learn about a model without loading it (no mlx here).

Reads `config.json` and the safetensors headers (a few KB each) to find the
number of blocks, the linear layers inside a block (for target-module checks),
the context length and whether the weights are already quantized.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from tunewire.trainer.paths import MAX_PATH_LENGTH, Roots, confined_path

_BLOCK_WEIGHT = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.weight$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MAX_HUB_ID = 96 * 2 + 1  # huggingface_hub's limit for each of owner and name, and the slash


class ModelUnusable(ValueError):
    """The model cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    model_type: str
    num_layers: int
    # Block-relative paths of the 2-D weights in a block, e.g. "self_attn.q_proj".
    block_linear_modules: frozenset[str]
    context_length: int
    quantized: bool


def resolve_model_dir(model: str, roots: Roots, field: str = "model") -> Path:
    """A local directory inside the model roots, or the cached snapshot of a hub id
    (fetched when online). A path outside the roots is PERMISSION_DENIED (a
    ServiceError from paths.py), before anything there is looked at."""
    if not model or not model.strip():
        raise ModelUnusable("no model given; pass a local directory or a Hugging Face hub id")
    if "\x00" in model or len(model) > MAX_PATH_LENGTH:
        raise ModelUnusable(
            f"is not a usable model name ({len(model)} characters or a NUL byte); "
            f"give a hub id or a path of at most {MAX_PATH_LENGTH} characters"
        )
    if model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        if not model.startswith((".", "/", "~")) and os.sep not in model:
            raise ModelUnusable(
                f"{model[:200]!r} is neither a path to a model directory nor a hub id of the "
                "form 'org/name'"
            )
        local = Path(confined_path(model, roots, field))
        if not local.is_dir():
            raise ModelUnusable(f"{model!r} is not a directory")
        if not (local / "config.json").is_file():
            raise ModelUnusable(
                f"{model!r} has no config.json; is it a model in the Hugging Face layout?"
            )
        return local
    if len(model) > MAX_HUB_ID:
        raise ModelUnusable(f"a hub id is at most {MAX_HUB_ID} characters, got {len(model)}")
    return _hub_snapshot(model)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download  # only for hub ids

    patterns = [
        "*.json",
        "*.safetensors",
        "*.py",
        "tokenizer.model",
        "*.tiktoken",
        "*.txt",
        "*.jinja",
    ]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelUnusable(
            f"hub model {repo_id!r} is not in the local cache and the hub is offline "
            "(HF_HUB_OFFLINE); download it first or pass a local directory"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10))
    except Exception as exc:
        raise ModelUnusable(
            f"cannot get hub model {repo_id!r}: {type(exc).__name__}; check the id and "
            "the network, or pass a local directory"
        ) from None


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100 << 20:
            raise ModelUnusable(f"{path.name} has an implausible header ({size} bytes)")
        return json.loads(f.read(size))


def weight_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Every tensor's shape, from the weight files' headers."""
    return _weight_shapes(model_dir)


def _weight_shapes(model_dir: Path) -> dict[str, list[int]]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelUnusable(f"{model_dir} has no .safetensors weights")
    shapes: dict[str, list[int]] = {}
    for file in files:
        try:
            header = _safetensors_header(file)
        except (OSError, ValueError, struct.error) as exc:
            raise ModelUnusable(f"cannot read {file.name}: {exc}") from None
        shapes.update({k: v.get("shape", []) for k, v in header.items() if k != "__metadata__"})
    return shapes


def inspect_model(model: str, roots: Roots, field: str = "model") -> ModelInfo:
    model_dir = resolve_model_dir(model, roots, field)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnusable(f"cannot read {model_dir / 'config.json'}: {exc}") from None
    text_config = config.get("text_config", config)
    shapes = _weight_shapes(model_dir)
    modules: set[str] = set()
    layers: set[int] = set()
    for name, shape in shapes.items():
        m = _BLOCK_WEIGHT.search(name)
        if m:
            layers.add(int(m.group(1)))
            if len(shape) == 2:
                modules.add(m.group(2))
    num_layers = int(text_config.get("num_hidden_layers") or (max(layers) + 1 if layers else 0))
    context = int(
        text_config.get("max_position_embeddings")
        or text_config.get("max_seq_len")
        or text_config.get("n_positions")
        or 0
    )
    return ModelInfo(
        path=model_dir,
        model_type=str(config.get("model_type", "")),
        num_layers=num_layers,
        block_linear_modules=frozenset(modules),
        context_length=context,
        quantized="quantization" in config or "quantization_config" in config,
    )


def resolve_target_modules(
    requested: list[str], available: frozenset[str]
) -> tuple[list[str], list[str]]:
    """Maps short ("q_proj") or block-relative ("self_attn.q_proj") names to the
    block's module paths. Returns (resolved paths, unknown names)."""
    resolved: list[str] = []
    unknown: list[str] = []
    for name in requested:
        matches = sorted(m for m in available if m == name or m.endswith("." + name))
        if matches:
            resolved.extend(m for m in matches if m not in resolved)
        else:
            unknown.append(name)
    return resolved, unknown
