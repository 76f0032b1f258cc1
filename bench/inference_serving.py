"""Chat serving against mlx_lm.server on the same model: time to first token and
tokens/s, cold and warm, with and without an adapter.

    flock /work/locks/bench.lock .venv/bin/python -m bench.inference_serving \
        [--model .tunewire/models/smollm2-135m-instruct-float32] [--rounds 5] [--max-tokens 64]

Both answer OpenAI's streamed chat completions over HTTP and are read by the same
client code (SSE, `stream_options.include_usage`): tunewire through its gateway's
`/openai/v1` (trainer + gateway as their own processes, the resident inference
worker behind them, run here at niceness 0 like mlx_lm.server), mlx_lm.server as
`python -m mlx_lm.server`. The adapter is a 2-step LoRA job tunewire trains on the
model first. Cold: the first request to a freshly started service, timed from the
service's launch (mlx_lm.server loads its model at start; tunewire's trainer
starts its inference worker at the first request). Warm: rounds alternate between
the services so that other load on the machine hits them alike; medians. Switch:
requests alternating base / adapter on one service (mlx_lm.server's `adapters`
field reloads the model; tunewire keeps the base and swaps the adapter).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tunewire.gateway.keys import add_key

REPO = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Explain in two sentences what a learning rate is."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def chat(url: str, headers: dict, body: dict) -> dict:
    """One streamed chat completion: TTFT (s), tokens, tokens/s after the first."""
    start = time.perf_counter()
    first = last = None
    tokens = 0
    with httpx.stream("POST", url, json=body, headers=headers, timeout=600) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
    assert first is not None, "no text came back"
    speed = (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0
    return {"ttft": first - start, "tokens": tokens, "tps": speed}


def body(model: str | None, max_tokens: int, **extra) -> dict:
    out = {
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    if model:
        out["model"] = model
    return out


class Tunewire:
    def __init__(self, home: Path, model: Path):
        self.home, self.model = home, model
        self.port = free_port()
        trainer_port = free_port()
        env = {**os.environ, "TUNEWIRE_HOME": str(home)}
        keys = home / "keys.yaml"
        home.mkdir(parents=True, exist_ok=True)
        self.key = add_key(keys, "bench", "member")
        self.launched = time.perf_counter()
        trainer_argv = ["--home", str(home), "--listen", f"127.0.0.1:{trainer_port}"]
        trainer_argv += ["--model-root", str(model.parent), "--data-root", str(home / "data")]
        trainer_argv += ["--inference-nice", "0"]  # as mlx_lm.server runs
        self.trainer = subprocess.Popen(
            [sys.executable, "-m", "tunewire.trainer.main", *trainer_argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(home / "trainer.err", "ab"),
        )
        gateway_argv = ["--trainer", f"127.0.0.1:{trainer_port}", "--keys", str(keys)]
        gateway_argv += ["--http-listen", f"127.0.0.1:{self.port}", "--grpc-listen", "127.0.0.1:0"]
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "tunewire.gateway.main", *gateway_argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(home / "gateway.err", "ab"),
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {self.key}"}
        wait_http(f"{self.url}/v1/info")
        self.ready = time.perf_counter()

    def chat_url(self) -> str:
        return f"{self.url}/openai/v1/chat/completions"

    def train_adapter(self, data: Path) -> tuple[str, str]:
        """A 2-step LoRA job on the model: (its ft: name, its adapter folder)."""
        spec = {
            "model": str(self.model),
            "dataset": {"path": str(data)},
            "lora": {"rank": 8},
            "hyperparameters": {"max_steps": 2, "batch_size": 1, "max_seq_length": 128},
            "display_name": "bench",
        }
        job = httpx.post(
            f"{self.url}/v1/jobs", json={"spec": spec}, headers=self.headers, timeout=60
        ).json()["job"]
        while True:
            got = httpx.get(
                f"{self.url}/openai/v1/fine_tuning/jobs/{job['id']}", headers=self.headers
            )
            found = got.json()
            if found["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1)
        assert found["status"] == "succeeded", found
        return found["fine_tuned_model"], str(Path(self.home, "jobs", job["id"], "adapters"))

    def stop(self) -> None:
        for proc in (self.gateway, self.trainer):
            proc.terminate()
        for proc in (self.gateway, self.trainer):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


class MlxServer:
    def __init__(self, model: Path, adapter: str | None = None):
        self.port = free_port()
        argv = [sys.executable, "-m", "mlx_lm.server", "--model", str(model)]
        argv += ["--port", str(self.port), "--host", "127.0.0.1"]
        if adapter:
            argv += ["--adapter-path", adapter]
        self.launched = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.url}/v1/models")

    def chat_url(self) -> str:
        return f"{self.url}/v1/chat/completions"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model", type=Path, default=REPO / ".tunewire/models/smollm2-135m-instruct-float32"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    model = work / "models" / args.model.name
    shutil.copytree(args.model, model)
    data = work / "home" / "data" / "train.json"
    data.parent.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "alpaca_example.json", data)
    load_start = os.getloadavg()
    n = args.max_tokens
    results: dict[str, list[dict]] = {}

    # Cold: from each service's launch to the first token of its first request.
    tw = Tunewire(work / "home", model)
    asked = time.perf_counter()
    cold_tw = chat(tw.chat_url(), tw.headers, body(str(model), n))
    cold_tw["from_launch"] = asked - tw.launched + cold_tw["ttft"]
    ft_model, adapter = tw.train_adapter(data)
    mlx = MlxServer(model)
    asked = time.perf_counter()
    cold_mlx = chat(mlx.chat_url(), {}, body(None, n))
    cold_mlx["from_launch"] = asked - mlx.launched + cold_mlx["ttft"]
    mlx_adapter = MlxServer(model, adapter)
    cold_mlx_adapter = chat(mlx_adapter.chat_url(), {}, body(None, n))
    cold_tw_adapter = chat(tw.chat_url(), tw.headers, body(ft_model, n))  # adapter's first use

    paths = {
        "tunewire base": lambda: chat(tw.chat_url(), tw.headers, body(str(model), n)),
        "mlx_lm.server base": lambda: chat(mlx.chat_url(), {}, body(None, n)),
        "tunewire adapter": lambda: chat(tw.chat_url(), tw.headers, body(ft_model, n)),
        "mlx_lm.server adapter": lambda: chat(mlx_adapter.chat_url(), {}, body(None, n)),
    }
    for _ in range(args.rounds):
        for name, run in paths.items():
            results.setdefault(name, []).append(run())
    # Switching base <-> adapter on one service, alternately.
    switch: dict[str, list[dict]] = {"tunewire": [], "mlx_lm.server": []}
    for i in range(args.rounds * 2):
        with_adapter = i % 2 == 1
        switch["tunewire"].append(
            chat(tw.chat_url(), tw.headers, body(ft_model if with_adapter else str(model), n))
        )
        extra = {"adapters": adapter} if with_adapter else {}
        switch["mlx_lm.server"].append(chat(mlx.chat_url(), {}, body(None, n, **extra)))
    info = httpx.get(f"{tw.url}/v1/info").json()["inference"]
    for service in (mlx, mlx_adapter):
        service.stop()
    tw.stop()
    load_end = os.getloadavg()

    print(f"## Inference: chat serving against mlx_lm.server ({args.model.name})\n")
    print(
        f"Command: `flock /work/locks/bench.lock .venv/bin/python -m bench.inference_serving "
        f"--rounds {args.rounds} --max-tokens {n}` ({time.strftime('%Y-%m-%d %H:%M')}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end). Streamed chat, greedy, "
        f"{n} tokens at most; medians of {args.rounds} alternated rounds.\n"
    )
    print("| service | cold TTFT s (first request) | warm TTFT s | warm tokens/s |")
    print("|---|---:|---:|---:|")
    colds = {
        "tunewire base": cold_tw,
        "mlx_lm.server base": cold_mlx,
        "tunewire adapter": cold_tw_adapter,
        "mlx_lm.server adapter": cold_mlx_adapter,
    }
    for name, rows in results.items():
        print(
            f"| {name} | {colds[name]['ttft']:.2f} | {median(rows, 'ttft'):.3f} | "
            f"{median(rows, 'tps'):.1f} |"
        )
    print()

    def ratio(key: str, ours: str, theirs: str) -> float:
        return median(results[ours], key) / median(results[theirs], key)

    base = ("tunewire base", "mlx_lm.server base")
    tuned = ("tunewire adapter", "mlx_lm.server adapter")
    print(
        f"Warm ratios tunewire / mlx_lm.server: TTFT {ratio('ttft', *base):.2f}x, "
        f"tokens/s {ratio('tps', *base):.2f}x (base); with the adapter "
        f"TTFT {ratio('ttft', *tuned):.2f}x, tokens/s {ratio('tps', *tuned):.2f}x.\n"
    )
    print(
        "Switching base and adapter on every request (one service each): median TTFT "
        f"tunewire {median(switch['tunewire'], 'ttft'):.3f} s, mlx_lm.server "
        f"{median(switch['mlx_lm.server'], 'ttft'):.3f} s (it reloads the model at each switch). "
        f"tunewire's worker at the end: {info.get('model_loads')} model load(s), "
        f"{info.get('adapter_loads')} adapter read(s), {info.get('requests')} requests.\n"
    )
    print(
        f"Cold from launch to the first token: tunewire {cold_tw['from_launch']:.2f} s "
        f"(trainer and gateway up in {tw.ready - tw.launched:.2f} s; the inference worker starts "
        f"and loads the model at the first request), mlx_lm.server {cold_mlx['from_launch']:.2f} s "
        "(it loads its model before it listens)."
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
