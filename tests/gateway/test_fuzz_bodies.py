"""Property-based fuzzing of every HTTP body against a real trainer and gateway:
whatever a client sends, the answer is never a 5xx, and a refusal names a
field.

One stack serves every example (a trainer that queues jobs but never starts
them, so an accepted spec costs nothing); the stack runs on its own event loop
in a thread and hypothesis drives plain blocking HTTP calls at it. The example
counts keep the whole file to about a minute on a quiet machine (35 s here).
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewire.v1 import training_job_pb2 as training_job_pb

from .conftest import start_stack
from .test_legacy_routes import EXAMPLES, train_body

pytestmark = pytest.mark.timeout(600)

FUZZ = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ---- the stack, in a thread ---------------------------------------------------------------


class Running:
    """A stack on its own event loop, reachable with blocking calls."""

    def __init__(self, tmp_path, model_dir):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.stack = self._run(
            start_stack(tmp_path, model_dir, extra_roots=(EXAMPLES,), rate_per_second=0)
        )
        self.url = self.stack.url
        self.headers = {**self.stack.headers("alice"), "Content-Type": "application/json"}

    def _run(self, coroutine, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        try:
            self._run(self.stack.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def call(self, method: str, path: str, data: bytes | None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=self.headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, _json(r.read())
        except urllib.error.HTTPError as err:
            return err.code, _json(err.read())


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {"raw": data[:200].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"value": value}


@pytest.fixture(scope="module")
def running(tmp_path_factory, tiny_model_dir) -> Iterator[Running]:
    server = Running(tmp_path_factory.mktemp("fuzz"), tiny_model_dir)
    yield server
    server.close()


def refusal_fields(answer: dict) -> list[str]:
    return [
        v.get("field", "")
        for d in answer.get("details", [])
        if str(d.get("@type", "")).endswith("BadRequest")
        for v in d.get("field_violations", [])
    ]


def check(status: int, answer: dict, what) -> None:
    assert status < 500, (status, answer, what)
    if status in (400, 422):
        named = refusal_fields(answer)
        # A refusal of the request names the field (a trainer refusal about a
        # resource, such as a path outside the roots, names the resource instead).
        reason = next((d.get("reason") for d in answer.get("details", []) if "reason" in d), "")
        assert any(named) or reason not in ("INVALID_ARGUMENT", "INVALID_CONFIG"), (
            answer,
            what,
        )
        assert "Traceback" not in json.dumps(answer)


# ---- values a hostile client sends -------------------------------------------------------

EXTREME_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**40, 2**63, 2**64, 2**70, -(2**63) - 1]
EXTREME_FLOATS = [0.0, -0.0, 1e-320, 1e308, -1e308, 3.5e38, 1e-45]
EXTREME_TEXT = [
    "",
    " ",
    "\x00",
    "NaN",
    "Infinity",
    "-Infinity",
    "../../etc/passwd",
    "/etc/passwd",
    "m" * 100_000,
    "\ud7ff\ue000\U0010ffff",
    "é" * 5000,
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(EXTREME_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EXTREME_FLOATS),
    st.text(max_size=30),
    st.sampled_from(EXTREME_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)
# Long lists (10,000 target modules or hosts) and deep nesting, which overflowed
# trailers and parsers.
big_values = st.one_of(
    st.builds(
        lambda n, s: [f"{s}{i}" for i in range(n)],
        st.sampled_from([1000, 10_000]),
        st.text(max_size=5),
    ),
    st.builds(lambda n: json.loads("[" * n + "]" * n), st.integers(1, 30)),
)
hostile = st.one_of(json_values, big_values)


def leaf_paths(descriptor: Descriptor, prefix: str = "", depth: int = 0) -> list[str]:
    """Every field of a message, nested messages opened (maps and lists as leaves)."""
    paths = []
    for field in descriptor.fields:
        path = f"{prefix}{field.name}"
        paths.append(path)
        nested = field.message_type
        if (
            nested is not None
            and not field.is_repeated
            and depth < 3
            and not nested.full_name.startswith("google.protobuf.")
        ):
            paths.extend(leaf_paths(nested, path + ".", depth + 1))
    return paths


SPEC_PATHS = leaf_paths(training_job_pb.TrainingJobSpec.DESCRIPTOR)


def set_path(body: dict, path: str, value) -> dict:
    body = json.loads(json.dumps(body))
    target = body
    *parents, leaf = path.split(".")
    for name in parents:
        if not isinstance(target.get(name), dict):
            target[name] = {}
        target = target[name]
    target[leaf] = value
    return body


def dumps(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


# ---- /v1 ---------------------------------------------------------------------------------


def valid_spec(running: Running) -> dict:
    return {
        "model": str(running.stack.model_dir),
        "dataset": {"path": str(EXAMPLES / "alpaca_example.json")},
        "hyperparameters": {"max_steps": 2, "batch_size": 2, "max_seq_length": 64},
    }


@FUZZ
@given(path=st.sampled_from(SPEC_PATHS), value=hostile)
def test_v1_jobs_every_spec_field(running, path, value):
    body = {"spec": set_path(valid_spec(running), path, value)}
    status, answer = running.call("POST", "/v1/jobs", dumps(body))
    check(status, answer, (path, repr(value)[:80]))


@FUZZ
@given(
    route=st.sampled_from(
        [
            ("/v1/datasets:validate", {"path": str(EXAMPLES / "alpaca_example.json")}),
            ("/v1/generate", {"job_id": "job-000000000000", "prompt": "hi"}),
            ("/v1/jobs/job-000000000000:cancel", {"force": False}),
            ("/v1/jobs", {"request_id": "r"}),
        ]
    ),
    name=st.one_of(
        st.sampled_from(
            [
                "path",
                "content",
                "options",
                "job_id",
                "prompt",
                "max_tokens",
                "temperature",
                "top_p",
                "seed",
                "messages",
                "force",
                "request_id",
                "dataset_id",
                "format",
            ]
        ),
        st.text(max_size=12),
    ),
    value=hostile,
)
def test_v1_other_bodies(running, route, name, value):
    path, base = route
    if path == "/v1/generate" and name in ("job_id", "model"):
        value = value if not isinstance(value, str) else 5  # never a real generation
    status, answer = running.call("POST", path, dumps({**base, name: value}))
    check(status, answer, (path, name, repr(value)[:80]))


# ---- the seed's routes -------------------------------------------------------------------

LEGACY_FIELDS = (
    [
        ((), name)
        for name in (
            "experiment_name",
            "model_name",
            "epochs",
            "max_steps",
            "learning_rate",
            "gradient_accumulation_steps",
            "warmup_steps",
            "seed",
            "save_steps",
            "output_dir",
            "lora",
            "dataset",
            "unknown",
        )
    ]
    + [
        (("lora",), name)
        for name in (
            "use_lora",
            "use_qlora",
            "lora_r",
            "lora_alpha",
            "lora_dropout",
            "lora_target_modules",
            "num_layers",
        )
    ]
    + [
        (("dataset",), name)
        for name in (
            "dataset_path",
            "dataset_format",
            "batch_size",
            "max_seq_length",
            "validation_split",
        )
    ]
)


@FUZZ
@given(where=st.sampled_from(LEGACY_FIELDS), value=hostile)
def test_legacy_train_start_every_field(running, where, value):
    section, name = where
    body = train_body(running.stack, EXAMPLES / "alpaca_example.json", max_steps=2)
    body = set_path(body, ".".join((*section, name)), value)
    status, answer = running.call("POST", "/train/start", dumps(body))
    check(status, answer, (where, repr(value)[:80]))
    if status >= 400:
        assert answer["status_code"] == status and answer["detail"] and answer["error_type"]


@FUZZ
@given(
    route=st.sampled_from(
        [
            ("/datasets/validate", {"file_path": str(EXAMPLES / "alpaca_example.json")}),
            ("/generate", {"model": "fine-tuned/job-000000000000", "prompt": "hi"}),
        ]
    ),
    name=st.one_of(
        st.sampled_from(
            ["file_path", "model", "prompt", "max_tokens", "temperature", "top_p", "seed"]
        ),
        st.text(max_size=12),
    ),
    value=hostile,
)
def test_legacy_other_bodies(running, route, name, value):
    path, base = route
    if path == "/generate" and name == "model" and isinstance(value, str):
        value = "fine-tuned/" + value  # never a real generation on a base model
    status, answer = running.call("POST", path, dumps({**base, name: value}))
    check(status, answer, (path, name, repr(value)[:80]))


# ---- raw bodies on every body route --------------------------------------------------------

BODY_ROUTES = [
    "/train/start",
    "/datasets/validate",
    "/generate",
    "/v1/jobs",
    "/v1/datasets:validate",
    "/v1/generate",
    "/v1/jobs/job-000000000000:cancel",
    "/v1/datasets:upload",
    "/v1/adapters:upload",
]
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.builds(lambda n, c: c * n, st.integers(1, 50_000), st.sampled_from([b"[", b'{"a":', b"-"])),
    st.builds(lambda n: b'{"seed": ' + b"9" * n + b"}", st.integers(15, 6000)),
    st.sampled_from([b"NaN", b"[Infinity]", b'{"a": 1, "a": 2}', b"\xff", b"null", b'"x"']),
)


@FUZZ
@given(path=st.sampled_from(BODY_ROUTES), data=raw_bodies)
def test_raw_bodies(running, path, data):
    status, answer = running.call("POST", path, data)
    check(status, answer, (path, data[:60]))


# ---- query strings and path segments of the other routes ---------------------------------

QUERY_ROUTES = [
    ("GET", "/train", ["status", "limit"]),
    ("GET", "/v1/jobs", ["page_size", "page_token", "states", "filter"]),
    ("GET", "/v1/datasets", ["page_size", "page_token"]),
    ("GET", "/v1/jobs/{id}", []),
    ("GET", "/v1/jobs/{id}/checkpoints", ["page_size"]),
    ("GET", "/v1/jobs/{id}/events", ["after_sequence"]),
    ("GET", "/v1/jobs/{id}/artifact", ["kind", "checkpoint_step"]),
    ("GET", "/v1/jobs/{id}/log", ["page_size", "page_token", "tail", "rank"]),
    ("GET", "/train/{id}/status", []),
    ("POST", "/train/{id}/stop", ["force"]),
]
query_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["-1", "0", "2147483648", str(2**70), "9" * 5000, "NaN", "true", ""]),
)


@FUZZ
@given(
    route=st.sampled_from(QUERY_ROUTES),
    job_id=st.one_of(st.just("job-000000000000"), st.text(min_size=1, max_size=40)),
    values=st.lists(st.tuples(st.integers(0, 8), query_values), max_size=3),
)
def test_query_strings_and_path_segments(running, route, job_id, values):
    method, template, names = route
    params = [([*names, "unknown_param"][i % (len(names) + 1)], v) for i, v in values]
    path = template.replace("{id}", urllib.parse.quote(job_id, safe=""))
    if params:
        path += "?" + urllib.parse.urlencode(params)
    status, answer = running.call(method, path, b"" if method == "POST" else None)
    check(status, answer, (method, path[:120]))


# ---- the OpenAI-compatible routes' bodies -------------------------------------------------

OPENAI_BODIES = [
    (
        "/openai/v1/fine_tuning/jobs",
        {"model": "no-such-base-model", "training_file": "file-000000000000"},
        [
            "model",
            "training_file",
            "validation_file",
            "suffix",
            "seed",
            "hyperparameters",
            "hyperparameters.n_epochs",
            "hyperparameters.batch_size",
            "hyperparameters.learning_rate_multiplier",
            "method",
            "method.type",
            "metadata",
        ],
    ),
    (
        "/openai/v1/chat/completions",
        {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        [
            "messages",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "n",
            "stop",
            "stream",
            "seed",
            "messages.0",
            "messages.0.role",
            "messages.0.content",
        ],
    ),
]


@FUZZ
@given(route=st.sampled_from(OPENAI_BODIES), pick=st.integers(0, 20), value=hostile)
def test_openai_bodies(running, route, pick, value):
    path, base, names = route
    name = names[pick % len(names)]
    body = json.loads(json.dumps(base))
    target = body
    *parents, leaf = name.split(".")
    for part in parents:
        key = int(part) if part.isdigit() else part
        if isinstance(target, list):
            target = target[key]
        else:
            if not isinstance(target.get(key), (dict, list)):
                target[key] = {}
            target = target[key]
    if isinstance(target, list):
        target[int(leaf)] = value
    else:
        target[leaf] = value
    status, answer = running.call("POST", path, dumps(body))
    assert status < 500, (status, answer, path, name, repr(value)[:80])
    if status >= 400:  # OpenAI's error shape: a message, and the parameter when one is at fault
        assert answer["error"]["message"], answer
        assert "Traceback" not in json.dumps(answer)
