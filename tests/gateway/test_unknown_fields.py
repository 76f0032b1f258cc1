"""An unknown field in a JSON body is named, with the nearest valid field name,
instead of protobuf's parser message in camelCase."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)


def _violations(body: dict) -> dict[str, str]:
    out = {}
    for detail in body["details"]:
        for v in detail.get("field_violations", []):
            out[v["field"]] = v["description"]
    return out


async def test_unknown_fields_name_the_nearest_valid_one(stack, http):
    body = {
        "spec": {
            "modle": "x",
            "hyperparameters": {"learning_rat": 0.1, "batchSize": 2},
            "lora": {"target_modules": ["q_proj"], "zzz": 1},
        },
        "request_id": "r",
    }
    async with http.post(f"{stack.url}/v1/jobs", json=body, headers=stack.headers("alice")) as r:
        assert r.status == 400
        reply = await r.json()
    found = _violations(reply)
    assert found["spec.modle"] == "unknown field; did you mean 'model'?"
    assert found["spec.hyperparameters.learning_rat"] == (
        "unknown field; did you mean 'learning_rate'?"
    )
    assert found["spec.lora.zzz"].startswith("unknown field; valid: rank, alpha")
    assert "spec.hyperparameters.batchSize" not in found  # the camelCase form is valid JSON
    assert reply["message"] == "spec.modle: unknown field; did you mean 'model'?"
    assert "learningRate" not in str(reply) and "tunewire.v1." not in str(reply)
