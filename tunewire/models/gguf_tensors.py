"""A GGUF file's tensors as mlx arrays with Hugging Face names, and the Q/K rows un-permuted.

- Q4_0, Q4_1, Q8_0: mlx's own GGUF reader (`mx.load`) returns them as the
  affine triple `nn.QuantizedLinear` holds (packed weight, scales, biases;
  group 32): kept as they are, bit for bit.
- F32, F16, BF16: read from the file as they are (mlx's reader would turn
  BF16 into float16, so floats come from the `gguf` reader).
- Every other type (K-quants, IQ quants, ...): dequantized with the `gguf`
  package's own `quants.dequantize`, and listed as such.
With a `dtype`, everything is dequantized and cast to it (a float base).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import gguf
import mlx.core as mx
import numpy as np

from tunewire.models.gguf_arch import Architecture, hf_name, qk_heads, unpermute_rows
from tunewire.models.gguf_file import FLOATS, MLX_QUANTIZED, GGUFFile

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
# K-quants and others become this unless --dtype says otherwise: half the
# size of float32, and its rounding error is far below the quantization's.
DEQUANTIZED_DEFAULT = "float16"


@dataclass
class Converted:
    weights: dict[str, mx.array] = field(default_factory=dict)
    # HF module path → {"group_size", "bits"} of each kept-quantized layer.
    quantized: dict[str, dict] = field(default_factory=dict)
    dequantized: Counter = field(default_factory=Counter)  # GGUF type → tensors dequantized


def _float_array(tensor: gguf.ReaderTensor) -> mx.array:
    data = np.asarray(tensor.data)
    if tensor.tensor_type == gguf.GGMLQuantizationType.BF16:
        return mx.array(data.view(np.uint16)).view(mx.bfloat16)
    return mx.array(data)


def convert_tensors(
    source: GGUFFile, arch: Architecture, config: dict, dtype: str | None
) -> Converted:
    target = DTYPES[dtype] if dtype else None
    out = Converted()
    needs_mlx = any(t.tensor_type in MLX_QUANTIZED for t in source.reader.tensors)
    # format named: mlx infers it from the extension, and a GGUF may be named anything.
    triples = mx.load(str(source.path), format="gguf") if needs_mlx else {}
    for tensor in source.reader.tensors:
        name = hf_name(tensor.name)
        if name is None:
            continue
        kind = tensor.tensor_type
        heads = qk_heads(tensor.name, config) if arch.permuted_qk else None

        def rows(x, heads=heads):
            return x if heads is None else unpermute_rows(x, heads)

        if kind in MLX_QUANTIZED:
            stem = tensor.name.removesuffix(".weight")
            w, scales, biases = (triples[f"{stem}.{p}"] for p in ("weight", "scales", "biases"))
            w, scales, biases = rows(w), rows(scales), rows(biases)
            # One GGUF block is one mlx group; the packing gives the bits.
            group_size = gguf.GGML_QUANT_SIZES[kind][0]
            bits = w.shape[-1] * 32 // (scales.shape[-1] * group_size)
            if target is None:
                module = name.removesuffix(".weight")
                out.weights[name] = w
                out.weights[f"{module}.scales"] = scales
                out.weights[f"{module}.biases"] = biases
                out.quantized[module] = {"group_size": group_size, "bits": bits}
                continue
            # Dequantized in float32 (exact: scale * q + bias), then cast.
            full = mx.dequantize(
                w,
                scales.astype(mx.float32),
                biases.astype(mx.float32),
                group_size=group_size,
                bits=bits,
            )
            out.weights[name] = full.astype(target)
        elif kind in FLOATS:
            array = rows(_float_array(tensor))
            out.weights[name] = array if target is None else array.astype(target)
        else:
            values = gguf.quants.dequantize(np.asarray(tensor.data), kind)
            cast = target or DTYPES[DEQUANTIZED_DEFAULT]
            out.weights[name] = rows(mx.array(values)).astype(cast)
            out.dequantized[kind.name] += 1
    mx.eval(out.weights)
    return out


def rope_freqs(source: GGUFFile) -> np.ndarray | None:
    tensor = source.tensors.get("rope_freqs.weight")
    return None if tensor is None else np.asarray(tensor.data, dtype=np.float32)
