"""Console sessions over plain HTTP: an API key exchanged for a cookie
(HttpOnly, SameSite=Strict, Secure over TLS, an expiry), CSRF checks on every
state-changing request, EventSource-style SSE with the cookie, sign out,
revoked keys and expired sessions refused; the YAML → spec conversion."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from yarl import URL

from tunewire.gateway.console.session import COOKIE, CSRF_HEADER, SessionStore
from tunewire.gateway.keys import remove_key
from tunewire.identity import Principal

pytestmark = pytest.mark.timeout(120)


async def sign_in(http: aiohttp.ClientSession, url: str, key: str, **headers):
    return await http.post(
        f"{url}/console/sign-in",
        data={"api_key": key},
        headers={"Origin": url, **headers},
        allow_redirects=False,
    )


async def signed_in(stack, who: str = "alice") -> tuple[aiohttp.ClientSession, str]:
    """A client holding alice's session cookie (and no key) and the CSRF token."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await sign_in(http, stack.url, stack.keys[who])
    assert r.status == 303 and r.headers["Location"] == "/#/jobs"
    async with http.get(f"{stack.url}/console/api/session") as r:
        assert r.status == 200
        me = await r.json()
    assert me["name"] == who and me["role"] == "member"
    return http, me["csrf_token"]


async def test_sign_in_sets_a_strict_http_only_cookie(stack):
    async with aiohttp.ClientSession() as http:
        r = await sign_in(http, stack.url, stack.keys["alice"])
        cookie = r.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert int(cookie["max-age"]) == 8 * 3600 and not cookie["secure"]
        assert stack.keys["alice"] not in cookie.value
        # Behind a TLS proxy the cookie is Secure.
        r = await sign_in(http, stack.url, stack.keys["alice"], **{"X-Forwarded-Proto": "https"})
        assert r.cookies[COOKIE]["secure"]

        r = await sign_in(http, stack.url, "tw_not-a-key")
        assert r.status == 303 and r.headers["Location"] == "/?signin=INVALID_API_KEY"
        assert COOKIE not in r.cookies
        # A page on another site cannot sign a visitor in (login CSRF).
        r = await sign_in(http, stack.url, stack.keys["alice"], Origin="http://evil.example")
        assert r.status == 403 and COOKIE not in r.cookies


async def test_the_cookie_authenticates_reads_and_csrf_guards_writes(stack):
    http, csrf = await signed_in(stack)
    try:
        async with http.get(f"{stack.url}/v1/jobs") as r:
            assert r.status == 200
        create = {"spec": {"model": "", "dataset": {"dataset_id": "ds-0000000000000000"}}}
        for headers in (
            {},
            {CSRF_HEADER: "wrong"},
            {CSRF_HEADER: csrf, "Origin": "http://evil.example"},
        ):
            async with http.post(f"{stack.url}/v1/jobs", json=create, headers=headers) as r:
                assert r.status == 403, headers
                assert (await r.json())["details"][0]["reason"] == "CSRF_CHECK_FAILED"
        async with http.post(
            f"{stack.url}/v1/jobs", json=create, headers={CSRF_HEADER: csrf, "Origin": stack.url}
        ) as r:
            assert r.status == 400  # past the session: the trainer's own pre-flight answers
            assert any(
                v["field"] == "spec.model"
                for d in (await r.json())["details"]
                for v in d.get("field_violations", ())
            )

        # EventSource sends no headers but the cookie: the stream works with it.
        job = await stack.create_job("alice")
        async with http.post(
            f"{stack.url}/v1/jobs/{job.id}:cancel", json={}, headers={CSRF_HEADER: csrf}
        ) as r:
            assert r.status == 200
        sse = {"Accept": "text/event-stream"}
        async with http.get(f"{stack.url}/v1/jobs/{job.id}/events", headers=sse) as r:
            text = (await asyncio.wait_for(r.read(), 30)).decode()
        assert "event: state_change" in text and "JOB_STATE_CANCELLED" in text

        # A key header wins over the cookie: bob's key sees bob's jobs only.
        async with http.get(f"{stack.url}/v1/jobs", headers=stack.headers("bob")) as r:
            assert all(j["owner"] == "bob" for j in (await r.json())["jobs"])

        # Signing out ends the session on the server, not only in the browser.
        cookie = http.cookie_jar.filter_cookies(URL(stack.url))[COOKIE].value
        async with http.delete(
            f"{stack.url}/console/api/session", headers={CSRF_HEADER: csrf}
        ) as r:
            assert r.status == 204 and r.cookies[COOKIE].value == ""
    finally:
        await http.close()
    async with aiohttp.ClientSession(cookies={COOKIE: cookie}) as stale:
        async with stale.get(f"{stack.url}/v1/jobs") as r:
            assert r.status == 401
            assert (await r.json())["details"][0]["reason"] == "SESSION_EXPIRED"
        async with stale.get(f"{stack.url}/") as r:
            assert r.status == 200  # the page itself still loads, to sign in again


async def test_a_revoked_key_ends_its_sessions(stack, tmp_path):
    http, _ = await signed_in(stack, "bob")
    try:
        remove_key(tmp_path / "keys.yaml", "bob")
        await asyncio.sleep(1.1)  # the key ring rereads a changed file
        async with http.get(f"{stack.url}/v1/jobs") as r:
            assert r.status == 401
            assert (await r.json())["details"][0]["reason"] == "INVALID_API_KEY"
    finally:
        await http.close()


async def test_the_console_page_and_its_security_headers(stack):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.url}/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            page = await r.text()
            csp = r.headers["Content-Security-Policy"]
        assert 'action="/console/sign-in"' in page and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and r.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(f"{stack.url}/console/js/main.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        for missing in ("/console/../server.py", "/console/js/nope.js", "/console/api/spec"):
            async with http.get(f"{stack.url}{missing}") as r:
                assert r.status in (404, 405), missing
        async with http.get(f"{stack.url}/console/api/session") as r:
            assert r.status == 401


async def test_pasted_yaml_becomes_a_spec_with_the_train_keys(stack):
    http, csrf = await signed_in(stack)
    try:
        yaml_text = (
            "model: m\ndata: ./my.jsonl\nbatch_size: 2\niters: 7\nlora_parameters: {rank: 4}\n"
        )
        body = {"yaml": yaml_text, "dataset_id": "ds-0123456789abcdef"}
        async with http.post(
            f"{stack.url}/console/api/spec", json=body, headers={CSRF_HEADER: csrf}
        ) as r:
            assert r.status == 200
            reply = await r.json()
        assert reply["spec"]["dataset"] == {"dataset_id": "ds-0123456789abcdef"}
        assert reply["spec"]["hyperparameters"] == {"batch_size": 2, "max_steps": "7"}
        assert reply["origins"]["hyperparameters.max_steps"] == "iters"

        bad = {"yaml": "model: m\nbatchsize: 2\n", "dataset_id": "ds-0123456789abcdef"}
        async with http.post(
            f"{stack.url}/console/api/spec", json=bad, headers={CSRF_HEADER: csrf}
        ) as r:
            assert r.status == 400
            [violation] = [
                v for d in (await r.json())["details"] for v in d.get("field_violations", ())
            ]
        assert violation["field"] == "batchsize" and "batch_size" in violation["description"]
        assert violation["description"].startswith("line 2:")
    finally:
        await http.close()


def test_sessions_expire():
    now = [1000.0]
    store = SessionStore(60, clock=lambda: now[0])
    token, session = store.create("key", Principal("alice"))
    assert store.get(token) is session and store.get("other") is None
    now[0] += 61
    assert store.get(token) is None


def test_the_session_lifetime_is_a_flag_within_bounds():
    from tunewire.gateway.config import GatewayConfig, parse_args

    assert parse_args(["--console-session-hours", "2"]).console_session_seconds == 7200
    with pytest.raises(ValueError, match="console_session_seconds"):
        GatewayConfig(console_session_seconds=10)
