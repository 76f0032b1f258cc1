"""A QLoRA adapter trained on a float base says so where mlx-lm users look: the
top-level `quantization` of its adapter_config.json (mlx-lm's own key and shape),
and the mlx-lm command that makes that quantized base. The command's base, with
the adapter, answers exactly as tunewire's inference worker does."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from mlx_lm import convert, generate, load

from tunewire.trainer.protocol.inference import Quantization
from tunewire.trainer.worker.model_cache import ModelCache

pytestmark = pytest.mark.timeout(240)
PROMPT = "What is a token?"


def test_the_quantized_base_is_in_the_adapter_config(make_config, run_worker, tiny_model_dir):
    worker = run_worker(make_config(method="qlora", quantization={"bits": 4, "group_size": 32}))
    assert worker.returncode == 0
    adapter = Path(worker.done().artifacts.adapter_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora"
    assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    assert config["tunewire"]["quantization"] == {"bits": 4, "group_size": 32}

    # The command as the config writes it, run through mlx-lm's own convert.
    argv = shlex.split(config["tunewire"]["quantized_base"])
    assert argv[0] == "mlx_lm.convert"
    assert "-q" in argv
    flags = [a for a in argv[1:] if a != "-q"]
    options = dict(zip(flags[::2], flags[1::2]))
    assert options["--hf-path"] == config["model"]
    quantized = options["--mlx-path"]
    convert(
        options["--hf-path"],
        quantized,
        quantize=True,
        q_bits=int(options["--q-bits"]),
        q_group_size=int(options["--q-group-size"]),
    )
    model, tokenizer = load(quantized, adapter_path=str(adapter))
    assert type(model.layers[0].self_attn.q_proj.linear).__name__ == "QuantizedLinear"
    with_mlx_lm = generate(model, tokenizer, PROMPT, max_tokens=12)

    cache = ModelCache(1 << 30)
    entry, _ = cache.get(str(tiny_model_dir), Quantization(bits=4, group_size=32))
    cache.prepare(entry, str(adapter))
    assert generate(entry.model, entry.tokenizer, PROMPT, max_tokens=12) == with_mlx_lm
