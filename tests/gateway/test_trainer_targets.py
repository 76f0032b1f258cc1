"""`--trainer` with several trainers: gRPC's ipv4:/ipv6:/dns: targets, balanced; bad lists refused by name."""

import pytest

from tunewire.addresses import AddressError, channel_target
from tunewire.gateway.config import parse_args


def test_one_trainer_is_used_as_given():
    assert channel_target("127.0.0.1:50052") == ("127.0.0.1:50052", False)
    assert channel_target("unix:/run/tunewire/trainer.sock") == (
        "unix:/run/tunewire/trainer.sock",
        False,
    )


def test_several_trainers_are_balanced():
    assert channel_target("10.0.0.1:50052, 10.0.0.2:50052") == (
        "ipv4:10.0.0.1:50052,10.0.0.2:50052",
        True,
    )
    assert channel_target("[fd00::1]:50052,[fd00::2]:50052") == (
        "ipv6:[fd00::1]:50052,[fd00::2]:50052",
        True,
    )
    assert channel_target("dns:///trainers.internal:50052") == (
        "dns:///trainers.internal:50052",
        True,
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("10.0.0.1:50052,trainer-b:50052", "'trainer-b:50052': a list of trainers takes IP:PORT"),
        ("10.0.0.1:50052,[fd00::2]:50052", "mix IPv4 and IPv6"),
        ("10.0.0.1:50052,10.0.0.2", "'10.0.0.2': a list of trainers takes IP:PORT"),
    ],
)
def test_a_bad_list_is_refused_naming_the_entry(value, says, capsys):
    with pytest.raises(AddressError, match=says.replace("(", r"\(")):
        channel_target(value)
    with pytest.raises(SystemExit):
        parse_args(["--trainer", value], environ={})
    assert says in capsys.readouterr().err
