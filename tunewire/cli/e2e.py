"""`tunewire e2e`: the seed's end-to-end suite, run against a live deployment.

    tunewire e2e [--url http://localhost:8200] [--report e2e.json] [--model DIR]

Over the seed's routes and the /v1 API: health, a call without a key refused,
both bundled examples validated, a LoRA job on Alpaca (seed routes) and a QLoRA
job on ShareGPT (/v1) trained to completion on the bundled tiny model (or
--model), their status with LoRA details, and a generation with each
fine-tuned adapter. Prints the report the seed's test_e2e_training.py printed
(total, passed, failed, success rate, feature checklist), writes it as JSON
with --report, and exits 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunewire.client.dev_key import resolve_api_key, tunewire_home

PROG = "tunewire e2e"
DEFAULT_URL = "http://localhost:8200"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FEATURES = {
    "health": "Health check",
    "dataset_validation": "Dataset validation",
    "lora": "LoRA training",
    "qlora": "QLoRA training",
    "alpaca": "Alpaca format",
    "sharegpt": "ShareGPT format",
    "generation": "Generation with the fine-tuned adapter",
}
FINISHED = ("completed", "failed", "cancelled")


class CheckFailed(Exception):
    """One check's failure, with what was seen."""


@dataclass
class Result:
    name: str
    passed: bool
    detail: str
    seconds: float
    features: tuple[str, ...] = ()


@dataclass
class Report:
    url: str
    started_at: str
    results: list[Result] = field(default_factory=list)

    def as_dict(self) -> dict:
        passed = sum(r.passed for r in self.results)
        total = len(self.results)
        features = {
            key: bool(ran) and all(r.passed for r in ran)
            for key in FEATURES
            for ran in [[r for r in self.results if key in r.features]]
        }
        return {
            "url": self.url,
            "started_at": self.started_at,
            "total": total,
            "passed": passed,
            "failed": total - passed,
            "success_rate": round(100.0 * passed / total, 1) if total else 0.0,
            "features": features,
            "tests": [asdict(r) for r in self.results],
        }


class Api:
    """Blocking JSON calls to the gateway's HTTP port."""

    def __init__(self, url: str, key: str, timeout: float):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def call(self, method: str, path: str, body=None, key: bool = True) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if key and self.key:
            headers["X-API-Key"] = self.key
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                return r.status, _json(r.read())
        except urllib.error.HTTPError as err:
            return err.code, _json(err.read())

    def ok(self, method: str, path: str, body=None) -> dict:
        status, answer = self.call(method, path, body)
        if status != 200:
            raise CheckFailed(f"{method} {path}: HTTP {status}: {_message(answer)}")
        return answer


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {"raw": data[:200].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"value": value}


def _message(answer: dict) -> str:
    return str(answer.get("detail") or answer.get("message") or answer)[:300]


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


class Suite:
    def __init__(self, api: Api, model: str, examples: Path, steps: int, job_timeout: float):
        self.api = api
        self.model = model
        self.examples = examples
        self.steps = steps
        self.job_timeout = job_timeout
        self.report = Report(api.url, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.jobs: dict[str, str] = {}

    def check(self, name: str, features: tuple[str, ...], action) -> bool:
        started = time.monotonic()
        try:
            detail = action() or "ok"
            passed = True
        except CheckFailed as exc:
            detail, passed = str(exc), False
        except (OSError, ValueError) as exc:  # the server went away, or answered nonsense
            detail, passed = f"{type(exc).__name__}: {exc}", False
        result = Result(name, passed, detail, round(time.monotonic() - started, 2), features)
        self.report.results.append(result)
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}", flush=True)
        return passed

    def run(self) -> Report:
        self.check("health", ("health",), self.health)
        self.check("auth refused without a key", (), self.auth_refused)
        for fmt in ("alpaca", "sharegpt"):
            self.check(
                f"validate {fmt} example",
                ("dataset_validation", fmt),
                lambda f=fmt: self.validate(f),
            )
        if self.check(
            "start LoRA job on Alpaca (/train/start)", ("lora", "alpaca"), self.start_lora
        ):
            self.check(
                "LoRA job completes, status with LoRA details",
                ("lora", "alpaca"),
                lambda: self.finish_seed(self.jobs["lora"]),
            )
            self.check(
                "generate with the LoRA adapter (/generate)",
                ("generation",),
                lambda: self.generate_seed(self.jobs["lora"]),
            )
        if self.check(
            "start QLoRA job on ShareGPT (/v1/jobs)", ("qlora", "sharegpt"), self.start_qlora
        ):
            self.check(
                "QLoRA job completes (/v1/jobs/{id})",
                ("qlora", "sharegpt"),
                lambda: self.finish_v1(self.jobs["qlora"]),
            )
            self.check(
                "generate with the QLoRA adapter (/v1/generate)",
                ("generation",),
                lambda: self.generate_v1(self.jobs["qlora"]),
            )
        return self.report

    # ---- the checks ---------------------------------------------------------------------

    def health(self) -> str:
        answer = self.api.ok("GET", "/health")
        expect(answer.get("status") == "healthy", f"status is {answer.get('status')!r}")
        _, info = self.api.call("GET", "/v1/info", key=False)
        return f"healthy, version {answer.get('version')}, device {info.get('device', '?')}"

    def auth_refused(self) -> str:
        for method, path in (("GET", "/train"), ("GET", "/v1/jobs")):
            status, _ = self.api.call(method, path, key=False)
            expect(status == 401, f"{method} {path} without a key answered {status}, not 401")
        return "401 on /train and /v1/jobs"

    def _example(self, fmt: str) -> Path:
        return self.examples / f"{fmt}_example.json"

    def validate(self, fmt: str) -> str:
        path = self._example(fmt)
        seed = self.api.ok("POST", "/datasets/validate", {"file_path": str(path)})
        expect(seed.get("valid") is True, f"{path.name} not valid: {seed.get('errors')}")
        expect(seed.get("format") == fmt, f"format {seed.get('format')!r}, not {fmt!r}")
        inline = self.api.ok(
            "POST",
            "/v1/datasets:validate",
            {"content": base64.b64encode(path.read_bytes()).decode()},
        )
        report = inline.get("report", {})
        expect(report.get("valid") is True, f"/v1 says {path.name} is not valid")
        return f"{seed.get('total_samples')} {fmt} samples valid (seed route and /v1)"

    def start_lora(self) -> str:
        body = {
            "experiment_name": "e2e lora alpaca",
            "model_name": self.model,
            "max_steps": self.steps,
            "learning_rate": 1e-4,
            "lora": {"use_lora": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
            "dataset": {
                "dataset_path": str(self._example("alpaca")),
                "dataset_format": "alpaca",
                "batch_size": 2,
                "max_seq_length": 64,
            },
        }
        answer = self.api.ok("POST", "/train/start", body)
        self.jobs["lora"] = answer["job_id"]
        expect(answer.get("lora_enabled") is True, "lora_enabled is not true")
        return f"job {answer['job_id']} {answer.get('status')}"

    def start_qlora(self) -> str:
        spec = {
            "display_name": "e2e qlora sharegpt",
            "model": self.model,
            "method": "TRAINING_METHOD_QLORA",
            "dataset": {"path": str(self._example("sharegpt"))},
            "lora": {"rank": 4, "alpha": 8},
            "hyperparameters": {"max_steps": self.steps, "batch_size": 2, "max_seq_length": 64},
        }
        answer = self.api.ok("POST", "/v1/jobs", {"spec": spec})
        job = answer.get("job", {})
        self.jobs["qlora"] = job["id"]
        return f"job {job['id']} {job.get('state')}"

    def _poll(self, read) -> dict:
        deadline = time.monotonic() + self.job_timeout
        while True:
            done, answer = read()
            if done:
                return answer
            if time.monotonic() > deadline:
                raise CheckFailed(f"not finished after {self.job_timeout:g} s")
            time.sleep(1.0)

    def finish_seed(self, job_id: str) -> str:
        def read():
            status = self.api.ok("GET", f"/train/{job_id}/status")
            return status.get("status") in FINISHED, status

        status = self._poll(read)
        expect(status["status"] == "completed", f"ended {status['status']}: {status.get('error')}")
        lora = status.get("lora_details") or {}
        expect(lora.get("enabled") is True, "lora_details.enabled is not true")
        expect(
            0 < lora.get("trainable_params", 0) < lora.get("total_params", 0), "no trainable params"
        )
        progress = status["progress"]
        expect(progress["current_step"] == progress["total_steps"], f"stopped at {progress}")
        return (
            f"completed {progress['total_steps']} steps, loss {status['metrics'].get('loss')}, "
            f"rank {lora.get('rank')}, {lora.get('trainable_percentage')}% trainable"
        )

    def finish_v1(self, job_id: str) -> str:
        def read():
            answer = self.api.ok("GET", f"/v1/jobs/{job_id}")
            job = answer.get("job", answer)
            state = job.get("state", "")
            ended = state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
            return ended, job

        job = self._poll(read)
        expect(
            job["state"] == "JOB_STATE_SUCCEEDED",
            f"ended {job['state']}: {job.get('error', {}).get('message')}",
        )
        lora = job.get("lora_details", {})
        expect(int(lora.get("trainable_parameters", 0)) > 0, "no trainable parameters")
        status = self.api.ok("GET", f"/train/{job_id}/status")
        expect(status["method"] == "qlora", f"method {status['method']!r}")
        return f"succeeded, loss {job.get('latest_metrics', {}).get('loss')}"

    def generate_seed(self, job_id: str) -> str:
        answer = self.api.ok(
            "POST",
            "/generate",
            {"model": f"fine-tuned/{job_id}", "prompt": "What is a token?", "max_tokens": 8},
        )
        expect(isinstance(answer.get("text"), str), "no text")
        expect(answer.get("tokens_generated", 0) > 0, "no tokens generated")
        return f"{answer['tokens_generated']} tokens in {answer.get('generation_time_ms')} ms"

    def generate_v1(self, job_id: str) -> str:
        answer = self.api.ok(
            "POST", "/v1/generate", {"job_id": job_id, "prompt": "Hello", "max_tokens": 8}
        )
        expect(int(answer.get("generated_tokens", 0)) > 0, "no tokens generated")
        return f"{answer['generated_tokens']} tokens"


def print_report(report: dict) -> None:
    line = "=" * 60
    print(f"\n{line}\nE2E TEST SUMMARY ({report['url']})\n{line}")
    print(f"Total tests: {report['total']}")
    print(f"Passed: {report['passed']}")
    print(f"Failed: {report['failed']}")
    print(f"Success rate: {report['success_rate']:.1f}%")
    print("\nFeature checklist:")
    for key, label in FEATURES.items():
        print(f"  {'✅' if report['features'][key] else '❌'} {label}")
    print(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the gateway's HTTP URL ({DEFAULT_URL})"
    )
    parser.add_argument("--report", type=Path, help="also write the report as JSON to this file")
    parser.add_argument(
        "--api-key", help="a key (default $TUNEWIRE_API_KEY, else a local server's dev key)"
    )
    parser.add_argument(
        "--model",
        help="model to fine-tune, as the server sees it (default: the bundled tiny model, "
        "$TUNEWIRE_HOME/models/tiny)",
    )
    parser.add_argument(
        "--examples",
        type=Path,
        default=EXAMPLES,
        help="folder with alpaca_example.json and sharegpt_example.json, inside the server's "
        "data roots",
    )
    parser.add_argument("--steps", type=int, default=3, help="training steps per job (3)")
    parser.add_argument(
        "--job-timeout", type=float, default=600.0, help="seconds each job may take (600)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP call (120)")
    return parser


def run_e2e(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    key = resolve_api_key(args.api_key, urllib.parse.urlsplit(args.url).netloc)
    model = args.model or str((tunewire_home() / "models" / "tiny").resolve())
    suite = Suite(
        Api(args.url, key, args.timeout),
        model,
        args.examples.resolve(),
        args.steps,
        args.job_timeout,
    )
    report = suite.run().as_dict()
    print_report(report)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.report}")
    return 0 if report["failed"] == 0 and report["total"] else 1


if __name__ == "__main__":
    sys.exit(run_e2e(sys.argv[1:]))
