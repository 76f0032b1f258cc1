"""A GGUF file opened with the `gguf` package: its metadata as plain values, its tensors by name.

The reader memory-maps the file, so opening a multi-gigabyte model costs
little until a tensor's data is touched. No mlx here.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gguf

# The types whose blocks mlx reads as its own affine (packed, scales, biases)
# triples, bit for bit: kept quantized on import.
MLX_QUANTIZED = {
    gguf.GGMLQuantizationType.Q4_0,
    gguf.GGMLQuantizationType.Q4_1,
    gguf.GGMLQuantizationType.Q8_0,
}
FLOATS = {
    gguf.GGMLQuantizationType.F32,
    gguf.GGMLQuantizationType.F16,
    gguf.GGMLQuantizationType.BF16,
}
# Metadata arrays that are large and read on demand only.
_BULKY = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores")


@dataclass
class GGUFFile:
    path: Path
    reader: gguf.GGUFReader
    metadata: dict = field(default_factory=dict)

    @property
    def tensors(self) -> dict[str, gguf.ReaderTensor]:
        return {t.name: t for t in self.reader.tensors}

    def type_counts(self) -> dict[str, int]:
        return dict(Counter(t.tensor_type.name for t in self.reader.tensors))

    def array(self, key: str) -> list | None:
        """A metadata array (tokens, merges, scores, token types), or None if absent."""
        found = self.reader.get_field(key)
        return None if found is None else list(found.contents())


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    with open(source, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{source} is not a GGUF file (it does not start with 'GGUF')")
    try:
        reader = gguf.GGUFReader(source)
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"{source}: cannot read the GGUF file: {exc}") from None
    metadata = {}
    for key, value in reader.fields.items():
        if key.startswith("GGUF.") or key in _BULKY or key == "tokenizer.ggml.token_type":
            continue
        metadata[key] = value.contents()
    return GGUFFile(source, reader, metadata)


def usual_mode(path: Path) -> None:
    """mkstemp/mkdtemp make private files; what we hand over gets the umask's usual mode."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
