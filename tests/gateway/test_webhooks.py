"""Completion webhooks end to end: registered over HTTP, sent by the trainer when a job
ends, signed as Standard Webhooks specifies (checked by the openai SDK's own verifier),
retried with backoff, recorded, and neither lost nor repeated across restarts."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from aiohttp import web

from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .conftest import restart_trainer, start_stack, wait_for

pytestmark = pytest.mark.timeout(240)

FAST_RETRIES = {
    "webhook_allow_private_networks": True,
    "webhook_first_retry_seconds": 0.2,
    "webhook_max_retry_delay_seconds": 0.5,
    "webhook_timeout_seconds": 3,
}
CANCELLED = "WEBHOOK_EVENT_TYPE_FINE_TUNING_JOB_CANCELLED"


class Receiver:
    """A webhook endpoint on loopback that answers `fail_first` requests with 503."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        self.fail_first = 0
        self.accepting = True
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body, time.time()))
        if len(self.requests) <= self.fail_first or not self.accepting:
            return web.Response(status=503)
        return web.Response(status=204)

    def accepted(self) -> list[tuple[dict[str, str], bytes, float]]:
        return [r for i, r in enumerate(self.requests) if i >= self.fail_first]


@pytest.fixture
async def receiver():
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"
    yield hook
    await runner.cleanup()


@pytest.fixture
async def hooks_stack(tmp_path, tiny_model_dir):
    s = await start_stack(tmp_path, tiny_model_dir, trainer_options=FAST_RETRIES)
    yield s
    await s.close()


async def register(http, stack, who: str, url: str, **fields) -> dict:
    async with http.post(
        f"{stack.url}/v1/webhooks",
        json={"webhook": {"url": url, **fields}},
        headers=stack.headers(who),
    ) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["webhook"]


async def cancelled_job(stack, who: str) -> str:
    """A queued job (this stack runs none) cancelled at once: it ends CANCELLED."""
    job = await stack.create_job(who)
    await stack.training().CancelTrainingJob(
        training_service_pb.CancelTrainingJobRequest(job_id=job.id), metadata=stack.md(who)
    )
    return job.id


async def deliveries(http, stack, who: str, webhook_id: str) -> tuple[int, dict]:
    async with http.get(
        f"{stack.url}/v1/webhooks/{webhook_id}/deliveries", headers=stack.headers(who)
    ) as response:
        return response.status, await response.json()


def unwrap(secret: str, request) -> object:
    """The openai SDK's own Standard Webhooks verification (signature and timestamp)."""
    headers, body, _ = request
    return openai.OpenAI(api_key="unused", webhook_secret=secret).webhooks.unwrap(body, headers)


async def test_a_cancelled_job_is_announced_signed_and_retried_until_accepted(
    hooks_stack, receiver, http
):
    receiver.fail_first = 2
    hook = await register(
        http, hooks_stack, "alice", receiver.url, event_types=[CANCELLED], description="ci"
    )
    assert hook["secret"].startswith("whsec_") and hook["owner"] == "alice"

    job_id = await cancelled_job(hooks_stack, "alice")
    await wait_for(lambda: len(receiver.requests) >= 3, "three attempts", timeout=30)

    ids = {headers["webhook-id"] for headers, _, _ in receiver.requests}
    assert len(ids) == 1  # one event, retried under the same id
    for request in receiver.requests:
        event = unwrap(hook["secret"], request)
        assert event.type == "fine_tuning.job.cancelled" and event.data.id == job_id
        assert event.id in ids
    # Backed off: the attempts are spread out, not fired together.
    times = [t for _, _, t in receiver.requests]
    assert times[2] - times[0] >= 0.3

    async def delivered():
        status, page = await deliveries(http, hooks_stack, "alice", hook["webhook_id"])
        assert status == 200
        found = page.get("deliveries", [])
        return found and found[0]["state"] == "WEBHOOK_DELIVERY_STATE_DELIVERED" and found

    (delivery,) = await wait_for(delivered, "the delivery to be recorded")
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 204
    assert delivery["job_id"] == job_id and delivery["last_error"] == ""
    await asyncio.sleep(1)
    assert len(receiver.requests) == 3  # nothing after the 2xx


async def test_webhooks_belong_to_their_owner_and_show_their_secret_once(
    hooks_stack, receiver, http
):
    hook = await register(http, hooks_stack, "alice", receiver.url)
    async with http.get(
        f"{hooks_stack.url}/v1/webhooks", headers=hooks_stack.headers("alice")
    ) as r:
        (listed,) = (await r.json())["webhooks"]
    assert listed["webhook_id"] == hook["webhook_id"] and not listed.get("secret")
    async with http.get(f"{hooks_stack.url}/v1/webhooks", headers=hooks_stack.headers("bob")) as r:
        assert (await r.json()).get("webhooks", []) == []
    async with http.get(f"{hooks_stack.url}/v1/webhooks", headers=hooks_stack.headers("root")) as r:
        assert [w["owner"] for w in (await r.json())["webhooks"]] == ["alice"]
    # Another tenant's webhook does not exist for bob.
    status, _ = await deliveries(http, hooks_stack, "bob", hook["webhook_id"])
    assert status == 404
    async with http.delete(
        f"{hooks_stack.url}/v1/webhooks/{hook['webhook_id']}", headers=hooks_stack.headers("bob")
    ) as r:
        assert r.status == 404
    # Bob's jobs never reach alice's endpoint.
    await cancelled_job(hooks_stack, "bob")
    await asyncio.sleep(1.5)
    assert receiver.requests == []
    async with http.delete(
        f"{hooks_stack.url}/v1/webhooks/{hook['webhook_id']}", headers=hooks_stack.headers("alice")
    ) as r:
        assert r.status == 200
    await cancelled_job(hooks_stack, "alice")
    await asyncio.sleep(1.5)
    assert receiver.requests == []  # deleted: nothing sent

    # At most 20 endpoints each.
    for _ in range(20):
        await register(http, hooks_stack, "bob", receiver.url)
    async with http.post(
        f"{hooks_stack.url}/v1/webhooks",
        json={"webhook": {"url": receiver.url}},
        headers=hooks_stack.headers("bob"),
    ) as r:
        body = await r.json()
    assert r.status == 429, body
    assert "20" in body["message"] and "TOO_MANY_WEBHOOKS" in str(body["details"])


async def test_no_event_is_lost_or_sent_twice_across_restarts(hooks_stack, receiver, http):
    receiver.accepting = False
    hook = await register(http, hooks_stack, "alice", receiver.url)
    job_id = await cancelled_job(hooks_stack, "alice")
    await wait_for(lambda: receiver.requests, "a first (refused) attempt", timeout=30)

    await hooks_stack.trainer.stop(grace=2)
    receiver.accepting = True
    refused_before = len(receiver.requests)
    await restart_trainer(hooks_stack)
    await wait_for(lambda: len(receiver.requests) > refused_before, "a retry after the restart")
    await asyncio.sleep(1)
    assert len(receiver.requests) == refused_before + 1

    await hooks_stack.trainer.stop(grace=2)
    await restart_trainer(hooks_stack)
    await asyncio.sleep(2)
    assert len(receiver.requests) == refused_before + 1  # delivered: never again
    event = unwrap(hook["secret"], receiver.requests[-1])
    assert event.data.id == job_id
    assert {h["webhook-id"] for h, _, _ in receiver.requests} == {event.id}


async def test_a_job_that_trains_to_the_end_is_announced_as_succeeded(
    tmp_path, tiny_model_dir, receiver, http
):
    stack = await start_stack(
        tmp_path, tiny_model_dir, max_running_jobs=1, trainer_options=FAST_RETRIES
    )
    try:
        hook = await register(http, stack, "alice", receiver.url)
        await register(
            http,
            stack,
            "alice",
            receiver.url + "?failed-only",
            event_types=["WEBHOOK_EVENT_TYPE_FINE_TUNING_JOB_FAILED"],
        )
        job = await stack.create_job("alice")

        async def ended():
            reply = await stack.training().GetTrainingJob(
                training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
            )
            return reply.job.state == training_job_pb.JOB_STATE_SUCCEEDED

        await wait_for(ended, "the job to succeed", timeout=180, interval=0.5)
        await wait_for(lambda: receiver.requests, "the webhook")
        await asyncio.sleep(1)
        (request,) = receiver.requests  # the failed-only endpoint heard nothing
        event = unwrap(hook["secret"], request)
        assert event.type == "fine_tuning.job.succeeded" and event.data.id == job.id
        assert event.object == "event" and abs(event.created_at - time.time()) < 120
    finally:
        await stack.close()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "required"),
        ("ftp://example.com/hook", "http or https"),
        ("http://user:secret@203.0.113.7/hook", "credentials"),
        ("http://127.0.0.1:9/hook", "loopback, private or link-local"),
        ("http://10.1.2.3/hook", "loopback, private or link-local"),
        ("http://169.254.169.254/latest/meta-data", "loopback, private or link-local"),
        ("http://[::1]/hook", "loopback, private or link-local"),
        ("http://" + "a" * 2100 + ".com/", "limit is 2048"),
    ],
)
async def test_endpoints_the_trainer_should_not_call_are_refused_naming_the_field(
    stack, http, url, words
):
    async with http.post(
        f"{stack.url}/v1/webhooks", json={"webhook": {"url": url}}, headers=stack.headers("alice")
    ) as r:
        body = await r.json()
    assert r.status == 400, body
    violations = [v for d in body["details"] for v in d.get("field_violations", ())]
    assert violations[0]["field"] == "webhook.url" and words in violations[0]["description"]


async def test_unknown_event_types_and_long_descriptions_are_refused(stack, http):
    async with http.post(
        f"{stack.url}/v1/webhooks",
        json={
            "webhook": {
                "url": "http://93.184.216.34/hook",
                "event_types": [99],
                "description": "x" * 300,
            }
        },
        headers=stack.headers("alice"),
    ) as r:
        body = await r.json()
    assert r.status == 400, body
    fields = {v["field"] for d in body["details"] for v in d.get("field_violations", ())}
    assert fields == {"webhook.event_types[0]", "webhook.description"}
