"""Sample text from a base model plus an optional adapter: one JSON request in, one JSON line out.

    echo '{"model": "M", "adapter_path": "JOB/adapters", "prompt": "Hi", "max_tokens": 32,
           "temperature": 0.0, "top_p": 1.0, "seed": 0}' | python -m tunewire.trainer.worker.generate

Writes `{"text", "prompt_tokens", "generated_tokens", "tokens_per_second"}`, or
`{"error": ...}` and exit code 1. Only that line goes to stdout; whatever the
libraries print goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass


@dataclass
class GenerateRequest:
    model: str
    adapter_path: str | None = None
    prompt: str | None = None
    messages: list[dict] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> GenerateRequest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"the request is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise TypeError("the request must be a JSON object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown request field {unknown[0]!r}")
        if "model" not in data:
            raise ValueError("model is required")
        request = cls(**data)
        request.check()
        return request

    def check(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("model is required")
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and not (
            isinstance(self.messages, list)
            and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in self.messages)
        ):
            raise ValueError("messages must be a list of {role, content} objects")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not 0 <= self.temperature:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def generate(request: GenerateRequest) -> dict:
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    try:
        model, tokenizer = load(request.model, adapter_path=request.adapter_path)
    except Exception as exc:
        raise ValueError(
            f"cannot load model {request.model!r} with adapter "
            f"{request.adapter_path!r}: {type(exc).__name__}: {exc}"
        ) from None
    if request.messages is not None:
        chat = [{"role": m["role"], "content": m["content"]} for m in request.messages]
        prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    else:
        prompt = request.prompt
    prompt_tokens = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    if not prompt_tokens:
        raise ValueError("the prompt is empty after tokenization")
    mx.random.seed(request.seed)
    sampler = make_sampler(temp=request.temperature, top_p=request.top_p)
    text, last = "", None
    for last in stream_generate(
        model, tokenizer, prompt_tokens, max_tokens=request.max_tokens, sampler=sampler
    ):
        text += last.text
    return {
        "text": text,
        "prompt_tokens": len(prompt_tokens),
        "generated_tokens": last.generation_tokens if last else 0,
        "tokens_per_second": last.generation_tps if last else 0.0,
    }


def main() -> int:
    out = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = generate(GenerateRequest.parse(sys.stdin.read()))
    except (ValueError, TypeError, KeyError) as exc:
        out.write(json.dumps({"error": str(exc)}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
