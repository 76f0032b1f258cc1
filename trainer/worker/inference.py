"""The resident inference worker: `python -m tunewire.trainer.worker.inference
--memory-budget-bytes N [--nice N]`, started by the trainer at the first generation.

Reads `tunewire.trainer.protocol.inference` requests on stdin, one per line, and
answers on the protocol pipe: the stdout it was started with. Everything else
this process prints (mlx-lm's progress, warnings) goes to stderr, the worker's
log. Base models stay loaded between requests (`model_cache.ModelCache`), tokens
go out as they are made, and the process runs at a lower CPU priority than the
training workers (`--nice`), so a job that trains keeps the CPU.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
import traceback
from typing import BinaryIO

from tunewire.trainer.protocol import inference as proto

DEFAULT_NICE = 10


class Stopper:
    """Text out as it is made, held back while it could still become a stop string."""

    def __init__(self, stops: list[str]):
        self._stops = [s for s in stops if s]
        self.text = ""
        self._sent = 0
        self.stopped = False

    def add(self, piece: str) -> str:
        """What of the reply so far can go out now ('' once a stop string was met)."""
        if self.stopped:
            return ""
        self.text += piece
        cut = min((i for i in (self.text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            return self._release(cut)
        hold = max(
            (k for s in self._stops for k in range(1, len(s)) if self.text.endswith(s[:k])),
            default=0,
        )
        return self._release(len(self.text) - hold)

    def flush(self) -> str:
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        upto = max(upto, self._sent)
        out, self._sent = self.text[self._sent : upto], upto
        return out


class Worker:
    def __init__(self, out: BinaryIO, budget_bytes: int):
        from tunewire.trainer.worker.model_cache import ModelCache

        self._out = out
        self._lock = threading.Lock()
        self.cache = ModelCache(budget_bytes)
        self.requests = 0
        self.cancelled: set[int] = set()
        self.pending: queue.Queue[proto.Generate | None] = queue.Queue()

    def send(self, record: proto.Reply) -> None:
        with self._lock:
            self._out.write(proto.encode(record))
            self._out.flush()

    def report(self) -> proto.Report:
        return proto.Report(
            model_loads=self.cache.model_loads,
            adapter_loads=self.cache.adapter_loads,
            evictions=self.cache.evictions,
            requests=self.requests,
            memory_budget_bytes=self.cache.budget_bytes,
            resident=self.cache.resident(),
            nice=os.nice(0),
        )

    def read_requests(self, stdin: BinaryIO) -> None:
        """Stdin reader thread: generations queue up, cancels take effect at once."""
        for line in stdin:
            if not line.strip():
                continue
            try:
                request = proto.decode_request(line)
            except proto.ProtocolError as exc:
                print(f"ignored: {exc}", file=sys.stderr, flush=True)
                continue
            if isinstance(request, proto.Cancel):
                self.cancelled.add(request.id)
            else:
                self.pending.put(request)
        self.pending.put(None)  # EOF: the daemon is gone

    def serve(self) -> None:
        while (request := self.pending.get()) is not None:
            try:
                self.send(self.generate(request))
            except Exception as exc:  # one request's failure must not end the worker
                from tunewire.trainer.worker.model_cache import OverBudget

                if not isinstance(exc, ValueError):
                    traceback.print_exc()
                self.send(
                    proto.Failed(
                        id=request.id,
                        message=str(exc) or type(exc).__name__,
                        over_budget=isinstance(exc, OverBudget),
                        report=self.report(),
                    )
                )
            finally:
                self.cancelled.discard(request.id)

    def generate(self, request: proto.Generate) -> proto.Finished:
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        started = time.perf_counter()
        entry, loaded = self.cache.get(request.model, request.quantization)
        self.cache.prepare(entry, request.adapter_path)
        tokenizer = entry.tokenizer
        if request.messages is not None:
            chat = [{"role": m.role, "content": m.content} for m in request.messages]
            prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        else:
            prompt = request.prompt or ""
        prompt_tokens = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
        if not prompt_tokens:
            raise ValueError("the prompt is empty after tokenization")
        mx.random.seed(request.seed)
        sampler = make_sampler(temp=request.temperature, top_p=request.top_p)
        stopper = Stopper(request.stop)
        first_token, last, finish = 0.0, None, "length"
        for last in stream_generate(
            entry.model, tokenizer, prompt_tokens, max_tokens=request.max_tokens, sampler=sampler
        ):
            if not first_token:
                first_token = time.perf_counter() - started
            piece = stopper.add(last.text)
            if piece:
                self.send(proto.Token(id=request.id, text=piece))
            if request.id in self.cancelled:
                finish = "cancelled"
                break
            if stopper.stopped or last.finish_reason == "stop":
                finish = "stop"
                break
        tail = stopper.flush()
        if tail:
            self.send(proto.Token(id=request.id, text=tail))
        self.requests += 1
        return proto.Finished(
            id=request.id,
            text=stopper.text,
            finish_reason=finish,
            prompt_tokens=len(prompt_tokens),
            generated_tokens=last.generation_tokens if last else 0,
            tokens_per_second=last.generation_tps if last else 0.0,
            model_loaded=loaded,
            first_token_seconds=first_token,
            report=self.report(),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunewire.trainer.worker.inference")
    parser.add_argument("--memory-budget-bytes", type=int, required=True)
    parser.add_argument("--nice", type=int, default=DEFAULT_NICE)
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    # The protocol owns the original stdout; anything printed from here on is log.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    import mlx.core  # noqa: F401  (loaded before `ready`: the import takes seconds)

    worker = Worker(out, args.memory_budget_bytes)
    reader = threading.Thread(
        target=worker.read_requests, args=(sys.stdin.buffer,), daemon=True, name="requests"
    )
    reader.start()
    worker.send(proto.Ready(report=worker.report()))
    worker.serve()
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
