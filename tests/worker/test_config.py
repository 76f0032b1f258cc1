"""The worker's config: built by the daemon's functions, read strictly by the worker. A field
missing, unknown, of the wrong type, an enum word the proto lacks or another protocol version
is a ConfigError naming it; the worker adds no default of its own."""

from __future__ import annotations

import json

import pytest

from tunewire.trainer.protocol import codec
from tunewire.trainer.protocol.config import ConfigError, decode, encode, load

pytestmark = pytest.mark.timeout(30)


def test_the_config_round_trips_and_every_bad_field_is_named(make_config, tmp_path):
    config = make_config()
    data = json.loads(encode(config))
    assert decode(data) == config
    assert data["hyperparameters"]["optimizer"] == "adam" and data["loss_masking"] == (
        "all_assistant_turns"
    )

    def refused(change) -> str:
        broken = json.loads(encode(config))
        change(broken)
        with pytest.raises(ConfigError) as err:
            decode(broken)
        return str(err.value)

    assert "hyperparameters.weight_decay is missing" in refused(
        lambda d: d["hyperparameters"].pop("weight_decay")
    )
    assert "unknown field hyperparameters.bogus" in refused(
        lambda d: d["hyperparameters"].update(bogus=1)
    )
    assert "method must be one of lora, qlora, dora, full; got 'prefix'" in refused(
        lambda d: d.update(method="prefix")
    )
    assert "lora.rank must be a whole number" in refused(lambda d: d["lora"].update(rank="8"))
    message = refused(lambda d: d.update(protocol=codec.PROTOCOL_VERSION + 1))
    assert f"protocol version {codec.PROTOCOL_VERSION + 1}" in message
    assert f"speaks version {codec.PROTOCOL_VERSION}" in message

    path = tmp_path / "not-json.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match=r"not-json\.json"):
        load(path)
