"""StreamGenerate over HTTP (`POST /v1/generate:stream`, the body a GenerateRequest),
as the console's playground reads it: NDJSON pieces as they are made, then the
summary; a refused request is its own status, not a 200 stream."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


def test_pieces_then_the_summary_and_errors_before_the_stream(openai_stack):
    url = f"{openai_stack.http_url}/v1/generate:stream"
    auth = {"Authorization": f"Bearer {openai_stack.keys['alice']}"}
    body = {"prompt": "hi", "max_tokens": 6, "model": str(openai_stack.model_dir)}
    reply = httpx.post(url, json=body, headers=auth, timeout=60)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line)["result"] for line in reply.text.splitlines()]
    *pieces, last = lines
    assert len(pieces) > 1 and "done" not in pieces[0]
    done = last["done"]
    assert "".join(p["text"] for p in pieces) == done["text"]
    assert done["generated_tokens"] == 6 and done["finish_reason"] == "length"

    refused = httpx.post(url, json={"prompt": "hi"}, headers=auth, timeout=60)
    assert refused.status_code == 400
    violations = refused.json()["details"][1]["field_violations"]
    assert violations == [{"field": "model", "description": "give a job_id or a base model"}]
    assert httpx.post(url, json=body, timeout=60).status_code == 401
