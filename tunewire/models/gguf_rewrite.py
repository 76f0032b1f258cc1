"""Write a copy of a GGUF file with some tensors replaced and every other byte of data as it was.

The same steps as the `gguf` package's own `gguf_new_metadata` script: each
metadata field is copied with its types, each tensor that is not replaced has
its raw blocks copied untouched. A replacement is a float32 array in the
GGUF's row layout, stored as F32, F16, BF16 or any type the `gguf` package can
quantize (Q8_0, Q4_0, ...). Used by the merged-model export, and to make
Q8_0/F16 variants of a model. No mlx here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from tunewire.models.gguf_file import GGUFFile, usual_mode

TYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
# llama.cpp's `general.file_type` for a file whose big tensors are of one type.
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


@dataclass(frozen=True)
class Replacement:
    """New values for a tensor: float32 of shape (rows, row length), as the GGUF reader shows
    it, stored as `kind` (f32, f16, bf16, q8_0, or any type the gguf package quantizes); or,
    as uint8, blocks already encoded as `kind`."""

    values: np.ndarray
    kind: str

    @property
    def qtype(self) -> gguf.GGMLQuantizationType:
        return TYPES.get(self.kind) or gguf.GGMLQuantizationType[self.kind.upper()]

    @property
    def shape(self) -> tuple[int, ...]:
        if self.values.dtype == np.uint8:
            return tuple(gguf.quants.quant_shape_from_byte_shape(self.values.shape, self.qtype))
        return tuple(self.values.shape)


def encode(values: np.ndarray, kind: str) -> np.ndarray:
    qtype = Replacement(values, kind).qtype
    if values.dtype == np.uint8:
        return values
    values = np.ascontiguousarray(values, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        return values
    if qtype == gguf.GGMLQuantizationType.F16:
        return values.astype(np.float16)
    return gguf.quants.quantize(values, qtype)


def rewrite_gguf(
    source: GGUFFile,
    target: str | os.PathLike,
    replacements: Mapping[str, Replacement],
    metadata: Mapping[str, tuple] | None = None,
) -> Path:
    """Copy `source` to `target` with `replacements` (tensor name → Replacement) and metadata
    changes (key → (value, GGUFValueType)). Written to a temporary file, then renamed."""
    reader = source.reader
    unknown = set(replacements) - {t.name for t in reader.tensors}
    if unknown:
        raise ValueError(f"no tensor {sorted(unknown)[0]!r} in {source.path}")
    target = Path(target)
    fd, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(scratch, source.metadata["general.architecture"])
        alignment = source.metadata.get("general.alignment")
        if alignment:
            writer.data_alignment = int(alignment)
        changes = dict(metadata or {})
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            if field.name in changes:
                value, kind = changes.pop(field.name)
                writer.add_key_value(field.name, value, kind)
            else:
                writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        for key, (value, kind) in changes.items():
            writer.add_key_value(key, value, kind)
        data = {}
        for tensor in reader.tensors:
            if tensor.name in replacements:
                new = replacements[tensor.name]
                expected = tuple(int(n) for n in reversed(tensor.shape))
                if new.shape != expected:
                    raise ValueError(
                        f"{tensor.name}: replacement of shape {new.shape}, the tensor's is {expected}"
                    )
                array, qtype = encode(new.values, new.kind), new.qtype
            else:
                array, qtype = tensor.data, tensor.tensor_type
            data[tensor.name] = array
            writer.add_tensor_info(tensor.name, array.shape, array.dtype, array.nbytes, qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            writer.write_tensor_data(data[tensor.name], tensor_endianess=reader.endianess)
        writer.close()
        usual_mode(Path(scratch))
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return target


def dequantized(tensor: gguf.ReaderTensor) -> np.ndarray:
    """A tensor's values as float32, whatever its type (the `gguf` package's dequantization)."""
    return gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32)


def requantize_all(source: GGUFFile, target: str | os.PathLike, kind: str) -> Path:
    """A variant of the model with every matrix stored as `kind` (norms stay F32)."""
    replacements = {
        t.name: Replacement(dequantized(t), kind)
        for t in source.reader.tensors
        if len(t.shape) == 2
    }
    file_type = (int(FILE_TYPES[kind]), gguf.GGUFValueType.UINT32)
    return rewrite_gguf(source, target, replacements, {"general.file_type": file_type})
