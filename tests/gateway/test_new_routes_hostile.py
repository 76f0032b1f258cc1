"""Hostile requests over the routes added after issue 13's first attack: webhooks,
job export and log, pause/resume, generate:stream, the OpenAI API (files, fine-tuning
jobs with an initial adapter or the dpo method, chat completions, models), artifact
Range headers, the console's routes and the seed's legacy routes.

Against one real trainer and gateway (jobs queue but never start, so nothing here
trains or generates): every answer is below 500, carries no traceback or server
path, and a refusal names its field (`/v1`: a BadRequest violation; OpenAI: the
`{"error": {...}}` shape); bob never reads or changes alice's job, file or webhook,
and her job ends where the requests left it, not stuck.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from urllib.parse import quote

import aiohttp
import pytest

from .conftest import start_stack

pytestmark = pytest.mark.timeout(120)

SURROGATE = '"\\ud800"'  # JSON text for a lone surrogate: valid JSON, not Unicode
DEEP = "[" * 100_000
HOOK_URL = "http://127.0.0.1:9/alice-hook"  # never called: her job never ends here
CHAT_LINE = json.dumps(
    {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]
    }
)


class Running:
    """A stack on its own event loop; `call` is a blocking HTTP request to it."""

    def __init__(self, tmp_path, model_dir):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.tmp = str(tmp_path)
        self.stack = self._run(
            start_stack(
                tmp_path,
                model_dir,
                rate_per_second=0,
                trainer_options={"webhook_allow_private_networks": True},
            )
        )
        self.session = self._run(self._session())
        self.ids = self._run(self._alice_resources())

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def _run(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _call(self, who, method, path, data=None, headers=None, form=None):
        sent = dict(headers or {})
        if who:
            sent["X-API-Key"] = self.stack.keys[who]
        if data is not None and not isinstance(data, (bytes, str)):
            data = json.dumps(data)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        if form is not None:
            data = aiohttp.FormData()
            for name, value, filename in form:
                data.add_field(name, value, filename=filename)
        async with self.session.request(
            method, self.stack.url + path, data=data, headers=sent
        ) as response:
            return response.status, await response.read(), response.headers

    def call(self, who, method, path, data=None, headers=None, form=None):
        return self._run(self._call(who, method, path, data, headers, form))

    async def _alice_resources(self) -> dict[str, str]:
        s = self.stack
        spec = {
            "model": str(s.model_dir),
            "dataset": {"path": str(s.data_dir / "alpaca.json")},
            "hyperparameters": {"max_steps": 2, "batch_size": 2, "max_seq_length": 64},
        }
        _, job, _ = await self._call("alice", "POST", "/v1/jobs", {"spec": spec})
        _, hook, _ = await self._call(
            "alice", "POST", "/v1/webhooks", {"webhook": {"url": HOOK_URL}}
        )
        _, upload, _ = await self._call(
            "alice",
            "POST",
            "/openai/v1/files",
            form=[
                ("purpose", "fine-tune", None),
                ("file", (CHAT_LINE + "\n") * 4, "alice.jsonl"),
            ],
        )
        file_id = json.loads(upload)["id"]
        _, ojob, _ = await self._call(
            "alice",
            "POST",
            "/openai/v1/fine_tuning/jobs",
            {"model": str(s.model_dir), "training_file": file_id},
        )
        return {
            "job": json.loads(job)["job"]["id"],
            "hook": json.loads(hook)["webhook"]["webhook_id"],
            "file": file_id,
            "ojob": json.loads(ojob)["id"],
        }

    def close(self) -> None:
        try:
            self._run(self.session.close())
            self._run(self.stack.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory, tiny_model_dir) -> Iterator[Running]:
    server = Running(tmp_path_factory.mktemp("hostile"), tiny_model_dir)
    yield server
    server.close()


def answer_of(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def v1_fields(answer: dict) -> list[str]:
    return [
        v.get("field", "")
        for d in answer.get("details", [])
        if str(d.get("@type", "")).endswith("BadRequest")
        for v in d.get("field_violations", [])
    ]


def assert_clean(running: Running, status: int, body: bytes, what) -> None:
    text = body.decode("utf-8", "replace")
    assert status < 500, (status, text[:400], what)
    assert "Traceback" not in text and 'File "' not in text, (text[:400], what)
    assert running.tmp not in text and "site-packages" not in text, (text[:400], what)


# (route, body) pairs the /v1 routes must refuse with a named field.
V1_BODIES = [
    ("/v1/webhooks", {"webhook": {"url": 5}}),
    ("/v1/webhooks", {"webhook": {"url": "file:///etc/passwd"}}),
    ("/v1/webhooks", {"webhook": {"url": "http://" + "a" * 3000 + ".com/"}}),
    ("/v1/webhooks", {"webhook": {"url": "https://example.com/", "event_types": ["NOPE"]}}),
    ("/v1/webhooks", {"webhook": {"url": "https://example.com/", "event_types": 7}}),
    ("/v1/webhooks", {"webhook": {"url": "https://example.com/", "description": {}}}),
    ("/v1/webhooks", {"webhook": [1, 2]}),
    ("/v1/generate", {"model": "x", "prompt": "hi", "max_tokens": 2**40}),
    ("/v1/generate", {"model": "x", "prompt": "hi", "temperature": "NaN"}),
    ("/v1/generate", {"model": "x", "prompt": "hi", "top_p": 1e308}),
    ("/v1/generate", {"model": "x", "prompt": "hi", "stop": ["a"] * 100}),
    ("/v1/generate", {"model": "x", "messages": [{"role": "user", "content": "x" * 1_100_000}]}),
    ("/v1/generate:stream", {"model": "x", "prompt": "hi", "seed": 2**70}),
    ("/v1/generate:stream", {"model": "x", "prompt": "hi", "max_tokens": -1}),
    ("/v1/generate:stream", {"model": "x", "messages": [{"role": "nope", "content": "x"}]}),
    ("/v1/generate:stream", {"model": "x", "messages": "hi"}),
    ("/v1/generate:stream", {"prompt": "hi", "checkpoint_step": 3}),
]


@pytest.mark.parametrize(("route", "body"), V1_BODIES, ids=lambda v: str(v)[:50])
def test_v1_bodies_are_refused_naming_a_field(running, route, body):
    status, raw, _ = running.call("alice", "POST", route, body)
    assert_clean(running, status, raw, body)
    assert 400 <= status < 500, (status, raw[:300])
    answer = answer_of(raw)
    assert any(v1_fields(answer)) or answer.get("message"), answer


# Raw bodies every JSON route refuses in its own shape: a lone surrogate was a 500
# on the OpenAI routes (protobuf cannot encode it) and the console's spec route
# took a 100,000-deep array to a RecursionError.
RAW = [
    ("/v1/webhooks", '{"webhook": {"url": ' + SURROGATE + "}}"),
    ("/v1/generate", '{"model": "x", "prompt": ' + SURROGATE + "}"),
    ("/v1/generate:stream", '{"model": "x", "prompt": ' + SURROGATE + "}"),
    ("/v1/jobs/JOB:pause", '{"job_id": ' + SURROGATE + "}"),
    (
        "/openai/v1/chat/completions",
        '{"model": "m", "messages": [{"role": "user", "content": ' + SURROGATE + "}]}",
    ),
    ("/openai/v1/chat/completions", '{"model": ' + SURROGATE + ', "messages": []}'),
    ("/openai/v1/fine_tuning/jobs", '{"model": "m", "training_file": ' + SURROGATE + "}"),
    ("/openai/v1/fine_tuning/jobs", '{"model": "m", "suffix": ' + SURROGATE + "}"),
    ("/openai/v1/chat/completions", DEEP),
    ("/openai/v1/fine_tuning/jobs", '{"model": "m", "seed": 1e400}'),
    ("/console/api/spec", DEEP),
    ("/console/api/spec", '{"yaml": ' + SURROGATE + "}"),
    ("/console/api/spec", "not json"),
    ("/train/start", '{"model_name": ' + SURROGATE + "}"),
    ("/generate", '{"prompt": ' + SURROGATE + "}"),
]


@pytest.mark.parametrize(("route", "text"), RAW, ids=lambda v: str(v)[:50])
def test_raw_bodies_are_refused_in_the_routes_shape(running, route, text):
    route = route.replace("JOB", running.ids["job"])
    status, raw, _ = running.call("alice", "POST", route, text.encode())
    assert_clean(running, status, raw, text[:80])
    assert status in (400, 422), (status, raw[:300])
    answer = answer_of(raw)
    if route.startswith("/openai/"):
        error = answer["error"]
        assert error["message"] and error["type"] == "invalid_request_error", error
        if SURROGATE in text:
            assert "surrogate" in error["message"] and error["param"], error
    elif route in ("/train/start", "/generate"):
        assert answer["detail"] and answer["status_code"] == status, answer
    else:
        assert any(v1_fields(answer)), answer
        if SURROGATE in text:
            assert "surrogate" in json.dumps(answer), answer


OPENAI_BODIES = [
    ("/openai/v1/chat/completions", {"model": "m", "messages": [{"role": "user"}]}),
    ("/openai/v1/chat/completions", {"model": "m", "messages": [None]}),
    ("/openai/v1/chat/completions", {"model": "m", "messages": [{"role": 5, "content": "x"}]}),
    (
        "/openai/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    ),
    ("/openai/v1/chat/completions", {"model": "m", "messages": [], "temperature": "NaN"}),
    ("/openai/v1/chat/completions", {"model": "m", "messages": [], "n": 2**70}),
    ("/openai/v1/chat/completions", {"model": "ft:" + "a" * 5000, "messages": []}),
    ("/openai/v1/fine_tuning/jobs", {"model": "m"}),
    ("/openai/v1/fine_tuning/jobs", {"model": "m", "training_file": "../../keys.yaml"}),
    (
        "/openai/v1/fine_tuning/jobs",
        {"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": -1}},
    ),
    (
        "/openai/v1/fine_tuning/jobs",
        {
            "model": "m",
            "training_file": "f",
            "hyperparameters": {"learning_rate_multiplier": 1e308},
        },
    ),
    (
        "/openai/v1/fine_tuning/jobs",
        {"model": "m", "training_file": "f", "method": {"type": "dpo", "dpo": []}},
    ),
    (
        "/openai/v1/fine_tuning/jobs",
        {
            "model": "m",
            "training_file": "f",
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "NaN"}}},
        },
    ),
    (
        "/openai/v1/fine_tuning/jobs",
        {"model": "m", "training_file": "f", "method": {"type": "reinforcement"}},
    ),
    (
        "/openai/v1/fine_tuning/jobs",
        {"model": "ft:job-000000000000:ckpt-step-" + "9" * 60, "training_file": "f"},
    ),
    ("/openai/v1/fine_tuning/jobs", {"model": "m", "training_file": "f", "suffix": "x" * 5000}),
]


@pytest.mark.parametrize(("route", "body"), OPENAI_BODIES, ids=lambda v: str(v)[:50])
def test_openai_bodies_are_refused_in_openai_shape(running, route, body):
    status, raw, _ = running.call("alice", "POST", route, body)
    assert_clean(running, status, raw, body)
    assert 400 <= status < 500, (status, raw[:300])
    error = answer_of(raw)["error"]
    assert error["message"] and set(error) >= {"type", "param", "code"}, error


UPLOADS = [
    [("file", CHAT_LINE, "a.jsonl")],  # no purpose
    [("purpose", "x" * 10_000, None), ("file", CHAT_LINE, "a.jsonl")],
    [("purpose", "fine-tune", None)],  # no file
    [("purpose", "fine-tune", None), ("file", "abc", None)],  # a field, not a file
    [("purpose", "fine-tune", None), ("file", b"\xff\xfe\n", "a.jsonl")],
    [("purpose", "fine-tune", None), ("file", b"", "a.jsonl")],
    [("purpose", "fine-tune", None), ("file", b"[" * 100_000 + b"\n", "a.jsonl")],
]


@pytest.mark.parametrize("parts", UPLOADS, ids=lambda v: str(v)[:50])
def test_hostile_uploads_are_refused(running, parts):
    status, raw, _ = running.call("alice", "POST", "/openai/v1/files", form=parts)
    assert_clean(running, status, raw, parts)
    assert 400 <= status < 500, (status, raw[:300])
    assert answer_of(raw)["error"]["message"]


RAW_MULTIPART = [
    b"--XX\r\nnope",
    b"abc",
    b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\nabc',
    b"--XX\r\nContent-Disposition: garbage\r\n\r\nabc\r\n--XX--\r\n",
    b'--XX\r\nContent-Disposition: form-data; name="file"; filename="\xff\xfe.jsonl"\r\n\r\n'
    + CHAT_LINE.encode()
    + b"\r\n--XX--\r\n",
    b'--XX\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n\xff\xfe\r\n--XX--\r\n',
]


@pytest.mark.parametrize("raw", RAW_MULTIPART, ids=lambda v: ascii(v[:30]))
@pytest.mark.parametrize("boundary", ["; boundary=XX", ""])
def test_broken_multipart_bodies_are_refused(running, raw, boundary):
    status, body, _ = running.call(
        "alice",
        "POST",
        "/openai/v1/files",
        raw,
        headers={"Content-Type": "multipart/form-data" + boundary},
    )
    assert_clean(running, status, body, raw[:40])
    assert 400 <= status < 500, (status, body[:300])
    assert answer_of(body)["error"]["message"]


@pytest.mark.parametrize(
    "filename", ["../../../etc/x.jsonl", "/etc/passwd", "a" * 10_000 + ".jsonl", ""]
)
def test_upload_file_names_never_become_paths(running, filename):
    status, raw, _ = running.call(
        "alice",
        "POST",
        "/openai/v1/files",
        form=[("purpose", "fine-tune", None), ("file", CHAT_LINE + "\n", filename)],
    )
    assert_clean(running, status, raw, filename[:40])
    assert status < 500
    if status == 200:
        stored = answer_of(raw)
        assert "/" not in stored["filename"] or stored["filename"] == filename


# (A plain ".." is resolved by the client before it is sent.)
BAD_IDS = ["..%2F..%2Fkeys.yaml", "a" * 2000, "%00", "%ff%fe", "*"]
ID_ROUTES = [
    ("GET", "/v1/jobs/{}/log"),
    ("GET", "/v1/jobs/{}/export?format=EXPORT_FORMAT_MLX"),
    ("GET", "/v1/jobs/{}/artifact"),
    ("POST", "/v1/jobs/{}:pause"),
    ("POST", "/v1/jobs/{}:resume"),
    ("DELETE", "/v1/webhooks/{}"),
    ("GET", "/v1/webhooks/{}/deliveries"),
    ("GET", "/openai/v1/files/{}/content"),
    ("GET", "/openai/v1/fine_tuning/jobs/{}"),
    ("GET", "/openai/v1/fine_tuning/jobs/{}/events"),
    ("POST", "/openai/v1/fine_tuning/jobs/{}/pause"),
    ("GET", "/openai/v1/models/{}"),
    ("GET", "/train/{}/status"),
    ("GET", "/console/{}"),
]


@pytest.mark.parametrize(("method", "route"), ID_ROUTES, ids=lambda v: str(v)[:40])
def test_hostile_ids_are_not_found_or_refused(running, method, route):
    for bad in BAD_IDS:
        status, raw, _ = running.call("alice", method, route.format(bad))
        assert_clean(running, status, raw, (route, bad[:20]))
        assert 400 <= status < 500, (route, bad[:20], status, raw[:300])


QUERIES = [
    "/v1/jobs/JOB/log?page_size=-1",
    "/v1/jobs/JOB/log?page_size=99999999999999",
    "/v1/jobs/JOB/log?page_token=xyz",
    "/v1/jobs/JOB/log?rank=-1",
    "/v1/jobs/JOB/log?tail=maybe",
    "/v1/jobs/JOB/export?format=NOPE",
    "/v1/jobs/JOB/export?format=EXPORT_FORMAT_GGUF&tensor_type=../../x",
    "/v1/jobs/JOB/artifact?file=../../state.db",
    "/v1/jobs/JOB/artifact?checkpoint_step=99999999999999999999",
    "/v1/jobs/JOB/artifact?range.offset=-1",
    "/v1/webhooks/HOOK/deliveries?page_size=-1",
    "/v1/webhooks/HOOK/deliveries?page_token=zz",
    "/openai/v1/fine_tuning/jobs?limit=-1",
    "/openai/v1/fine_tuning/jobs?limit=100000000000",
    "/openai/v1/fine_tuning/jobs/OJOB/events?limit=x",
    "/openai/v1/fine_tuning/jobs/OJOB/checkpoints?limit=0",
    "/openai/v1/files?limit=-5",
]


@pytest.mark.parametrize("query", QUERIES)
def test_hostile_queries_are_refused(running, query):
    for name, key in (("JOB", "job"), ("OJOB", "ojob"), ("HOOK", "hook")):
        query = query.replace(name, running.ids[key])
    status, raw, _ = running.call("alice", "GET", query)
    assert_clean(running, status, raw, query)
    assert 400 <= status < 500, (query, status, raw[:300])


@pytest.mark.parametrize(
    "value", ["bytes=5-2", "bytes=a-b", "bytes=0-1,2-3", "items=0-1", "bytes=" + "9" * 500 + "-"]
)
def test_range_headers_on_an_unfinished_job(running, value):
    path = f"/v1/jobs/{running.ids['job']}/artifact"
    status, raw, _ = running.call("alice", "GET", path, headers={"Range": value})
    assert_clean(running, status, raw, value)
    assert 400 <= status < 500  # the queued job has nothing to download yet


BOB_ROUTES = [
    ("GET", "/v1/jobs/JOB", None),
    ("GET", "/v1/jobs/JOB/log", None),
    ("GET", "/v1/jobs/JOB/export?format=EXPORT_FORMAT_MLX", None),
    ("GET", "/v1/jobs/JOB/artifact", None),
    ("POST", "/v1/jobs/JOB:pause", None),
    ("POST", "/v1/jobs/JOB:resume", None),
    ("POST", "/v1/jobs/JOB:cancel", None),
    ("DELETE", "/v1/webhooks/HOOK", None),
    ("GET", "/v1/webhooks/HOOK/deliveries", None),
    ("GET", "/openai/v1/files/FILE", None),
    ("GET", "/openai/v1/files/FILE/content", None),
    ("GET", "/openai/v1/fine_tuning/jobs/OJOB", None),
    ("GET", "/openai/v1/fine_tuning/jobs/OJOB/events", None),
    ("GET", "/openai/v1/fine_tuning/jobs/OJOB/checkpoints", None),
    ("POST", "/openai/v1/fine_tuning/jobs/OJOB/pause", None),
    ("POST", "/openai/v1/fine_tuning/jobs/OJOB/cancel", None),
    ("GET", "/openai/v1/models/ft:JOB", None),
    ("GET", "/train/JOB/status", None),
    ("POST", "/train/JOB/stop", None),
    ("POST", "/v1/generate", {"job_id": "JOB", "prompt": "hi"}),
    ("POST", "/v1/generate:stream", {"job_id": "JOB", "prompt": "hi"}),
    (
        "POST",
        "/openai/v1/chat/completions",
        {"model": "ft:JOB", "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("POST", "/openai/v1/fine_tuning/jobs", {"model": "ft:JOB", "training_file": "FILE"}),
    ("POST", "/openai/v1/fine_tuning/jobs", {"model": "m", "training_file": "FILE"}),
]


def _with_ids(running, value):
    text = value if isinstance(value, str) else json.dumps(value)
    for name, key in (("OJOB", "ojob"), ("JOB", "job"), ("HOOK", "hook"), ("FILE", "file")):
        text = text.replace(name, running.ids[key])
    return text


@pytest.mark.parametrize(("method", "route", "body"), BOB_ROUTES, ids=lambda v: str(v)[:40])
def test_bob_never_reaches_alices_resources(running, method, route, body):
    path = _with_ids(running, route)
    data = _with_ids(running, body).encode() if body is not None else None
    status, raw, _ = running.call("bob", method, path, data)
    assert_clean(running, status, raw, path)
    assert 400 <= status < 500, (path, status, raw[:300])
    assert str(running.stack.model_dir) not in raw.decode("utf-8", "replace")
    assert HOOK_URL.encode() not in raw and b"alice.jsonl" not in raw


def test_bob_lists_none_of_alices_things_and_her_job_is_not_stuck(running):
    for path in (
        "/v1/jobs",
        "/v1/webhooks",
        "/openai/v1/files",
        "/openai/v1/models",
        "/openai/v1/fine_tuning/jobs",
        "/train",
    ):
        status, raw, _ = running.call("bob", "GET", path)
        assert status == 200, (path, raw[:200])
        for key in ("job", "hook", "file", "ojob"):
            assert running.ids[key].encode() not in raw, (path, key)
    job = running.ids["job"]
    # Pause and resume a queued job as its owner: it goes back to the queue.
    for action, state in (("pause", "JOB_STATE_PAUSED"), ("resume", "JOB_STATE_QUEUED")):
        status, raw, _ = running.call("alice", "POST", f"/v1/jobs/{job}:{action}", {})
        assert status == 200, raw[:300]
        _, raw, _ = running.call("alice", "GET", f"/v1/jobs/{job}")
        assert answer_of(raw)["job"]["state"] == state
    status, raw, _ = running.call("alice", "POST", f"/v1/jobs/{job}:cancel", {})
    assert status == 200, raw[:300]
    _, raw, _ = running.call("alice", "GET", f"/v1/jobs/{job}")
    assert answer_of(raw)["job"]["state"] == "JOB_STATE_CANCELLED"


def test_a_webhooks_output_only_fields_are_not_taken_from_the_client(running):
    status, raw, _ = running.call(
        "alice",
        "POST",
        "/v1/webhooks",
        {"webhook": {"url": HOOK_URL, "owner": "bob", "secret": "mine", "webhook_id": "wh-x"}},
    )
    assert status == 200, raw[:300]
    hook = answer_of(raw)["webhook"]
    assert hook["owner"] == "alice" and hook["secret"] != "mine" and hook["webhook_id"] != "wh-x"
    _, raw, _ = running.call("bob", "GET", "/v1/webhooks")
    assert hook["webhook_id"].encode() not in raw
    running.call("alice", "DELETE", f"/v1/webhooks/{hook['webhook_id']}")


def test_console_sign_in_and_spec_with_hostile_input(running):
    for body, ctype in (
        (b"", "application/x-www-form-urlencoded"),
        (b"api_key=" + b"a" * 10_000, "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
        (DEEP.encode(), "application/json"),
        (b"api_key=%ff%fe", "application/x-www-form-urlencoded"),
        (b"x", "multipart/form-data"),
        (b"--XX\r\nnope", "multipart/form-data; boundary=XX"),
    ):
        status, raw, _ = running.call(
            None, "POST", "/console/sign-in", body, headers={"Content-Type": ctype}
        )
        assert_clean(running, status, raw, body[:20])
    for yaml_text in (
        "model: [",
        "a: &a [*a, *a]",
        "!!python/object:os.system x",
        "learning_rate: .nan",
        "- " * 10_000,
    ):
        status, raw, _ = running.call("alice", "POST", "/console/api/spec", {"yaml": yaml_text})
        assert_clean(running, status, raw, yaml_text[:20])
    status, raw, _ = running.call(
        None, "GET", "/console/api/session", headers={"Cookie": "tunewire_session=" + "a" * 4000}
    )
    assert_clean(running, status, raw, "cookie")
    assert status == 401


ADAPTER_CONFIG = json.dumps({"fine_tune_type": "lora", "lora_parameters": {"rank": 8}})
ADAPTER_UPLOADS = [
    ("", b""),
    ("metadata.display_name=x", b"\x00" * 16),
    ("metadata.adapter_config=" + quote(ADAPTER_CONFIG), b"\xff" * 8 + b"{}"),
    ("metadata.adapter_config=" + quote(ADAPTER_CONFIG), (2**63).to_bytes(8, "little")),
    ("metadata.adapter_config=" + quote(ADAPTER_CONFIG), (100).to_bytes(8, "little") + b"[" * 100),
    ("metadata.adapter_config=%ED%A0%80", b"x"),
    ("metadata.adapter_config=" + quote("[" * 100_000), b"x"),
    (
        "metadata.adapter_config="
        + quote('{"fine_tune_type": "lora", "lora_parameters": {"rank": 1180591620717411303424}}'),
        b"x",
    ),
    ("metadata.adapter_config=NaN", b"x"),
]


@pytest.mark.parametrize(("query", "body"), ADAPTER_UPLOADS, ids=lambda v: ascii(v)[:40])
def test_hostile_adapter_uploads_are_refused(running, query, body):
    status, raw, _ = running.call(
        "alice",
        "POST",
        f"/v1/adapters:upload?{query}",
        body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert_clean(running, status, raw, query[:40])
    assert 400 <= status < 500, (status, raw[:300])


SURROGATE_URLS = [
    ("GET", "/v1/jobs/%ED%A0%80/log"),
    ("GET", "/openai/v1/models/%ED%A0%80"),
    ("GET", "/openai/v1/fine_tuning/jobs?after=%ED%A0%80"),
    ("GET", "/v1/jobs?page_token=%ED%A0%80"),
    ("GET", "/train/%ED%A0%80/status"),
    ("POST", "/v1/jobs/%ED%A0%80:pause"),
    ("POST", "/openai/v1/fine_tuning/jobs/%ED%A0%80/cancel"),
]


@pytest.mark.parametrize(("method", "path"), SURROGATE_URLS, ids=lambda v: v[:40])
def test_urls_that_are_not_utf8(running, method, path):
    status, raw, _ = running.call("alice", method, path, {} if method == "POST" else None)
    assert_clean(running, status, raw, path)
    assert 400 <= status < 500, (status, raw[:300])


UNPARSABLE = [
    ("/tunewire.v1.TrainingService/GetTrainingJob", b"\x0a\x02\xff\xfe"),  # job_id not UTF-8
    ("/tunewire.v1.TrainingService/GetTrainingJob", b"\xff" * 10),  # corrupt wire format
    ("/tunewire.v1.TrainingService/CreateTrainingJob", b"\x0a\x04\x0a\x02\xff\xfe"),
    ("/tunewire.v1.TrainingService/Generate", b"\x1a\x02\xff\xfe"),
    ("/tunewire.v1.WebhookService/CreateWebhook", b"\x0a\x04\x12\x02\xff\xfe"),
    ("/tunewire.v1.TrainingService/WatchTrainingJob", b"\x0a\x02\xff\xfe"),  # a stream
]


@pytest.mark.parametrize(("method", "payload"), UNPARSABLE, ids=lambda v: ascii(v)[:50])
def test_grpc_requests_that_do_not_parse_are_invalid_argument(running, method, payload):
    """The gateway relays bytes undecoded; the trainer's deserializer refusing them was
    UNKNOWN (a 5xx) naming a Python class."""
    import grpc

    async def call():
        channel = running.stack.channel()
        same = lambda b: b  # noqa: E731
        try:
            if method.endswith("Watch" + "TrainingJob"):
                stream = channel.unary_stream(
                    method, request_serializer=same, response_deserializer=same
                )
                async for _ in stream(payload, metadata=running.stack.md("alice")):
                    pass
            else:
                unary = channel.unary_unary(
                    method, request_serializer=same, response_deserializer=same
                )
                await unary(payload, metadata=running.stack.md("alice"))
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details()
        return None, ""

    code, details = running._run(call())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "class" not in details and "request" in details
