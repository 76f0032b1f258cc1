"""The shared edges: one address parser and loopback rule, one identity module, and
gateway and trainer that never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tunewire.addresses import Address, AddressError, is_local_only, parse
from tunewire.identity import ADMIN, LOCAL, MEMBER, Principal, principal_from_metadata

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50052", Address("127.0.0.1", 50052)),
        ("localhost:0", Address("localhost", 0)),
        ("[::1]:8200", Address("::1", 8200)),
        (":8200", Address("", 8200)),
        ("unix:/tmp/t.sock", Address(path="/tmp/t.sock")),
        ("unix:///tmp/t.sock", Address(path="/tmp/t.sock")),
        ("unix:rel.sock", Address(path="rel.sock")),
    ],
)
def test_addresses_parse_in_grpcs_forms_and_print_back(text, expected):
    assert parse(text) == expected
    assert parse(str(expected)) == expected


def test_a_bare_host_takes_the_default_port_only_when_there_is_one():
    assert parse("gpu-box", default_port=50051) == Address("gpu-box", 50051)
    assert parse("[::1]", default_port=1) == Address("::1", 1)
    with pytest.raises(AddressError, match="HOST:PORT"):
        parse("gpu-box")


@pytest.mark.parametrize(
    "text", ["", "host:port", "host:70000", "::1:5", "unix:", "a:b:c", "[::1]5"]
)
def test_bad_addresses_are_refused_with_the_address_quoted(text):
    with pytest.raises(AddressError) as caught:
        parse(text)
    assert repr(text.strip()) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ("unix:/run/t.sock", True),
        ("127.0.0.1:1", True),
        ("127.8.9.10:1", True),
        ("[::1]:1", True),
        ("localhost:1", True),
        ("0.0.0.0:1", False),
        (":1", False),
        ("[::]:1", False),
        ("10.0.0.1:1", False),
        ("example.com:1", False),
        ("not an address", False),
    ],
)
def test_the_loopback_rule(text, local):
    assert is_local_only(text) is local


def test_one_principal_and_the_local_operator():
    assert principal_from_metadata({}) == LOCAL and LOCAL.admin
    alice = principal_from_metadata({"x-tunewire-principal": "alice"})
    assert alice == Principal("alice", MEMBER) and not alice.admin
    assert alice.can_see("alice") and not alice.can_see("bob")
    root = principal_from_metadata({"x-tunewire-principal": "root", "x-tunewire-role": ADMIN})
    assert root.admin and root.can_see("bob")
    # An unknown role is a member, never an admin.
    odd = principal_from_metadata({"x-tunewire-principal": "x", "x-tunewire-role": "Admin"})
    assert not odd.admin


def imported_modules(folder: str) -> dict[str, set[str]]:
    found = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


def is_under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("gateway", ("tunewire.trainer",)),
        ("trainer", ("tunewire.gateway",)),
        ("tunewire/client", ("tunewire.trainer", "tunewire.gateway", "tunewire.cli")),
    ],
)
def test_gateway_trainer_and_client_do_not_import_each_other(folder, forbidden):
    offenders = {
        path: sorted(n for n in names if is_under(n, forbidden))
        for path, names in imported_modules(folder).items()
        if any(is_under(n, forbidden) for n in names)
    }
    assert not offenders


def test_the_shared_modules_stand_alone():
    for module in ("tunewire/identity.py", "tunewire/addresses.py", "tunewire/reasons.py"):
        tree = ast.parse((REPO / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = ("tunewire.gateway", "tunewire.trainer", "tunewire.cli", "tunewire.client")
                assert not is_under(node.module, parts), module


def test_header_names_and_principal_have_one_owner():
    owners = {}
    for folder in ("gateway", "trainer", "tunewire", "datasets"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for needle in (
                '"x-tunewire-principal"',
                '"x-tunewire-internal-token"',
                "class Principal",
            ):
                if needle in text:
                    owners.setdefault(needle, []).append(str(path.relative_to(REPO)))
    assert owners == {
        needle: ["tunewire/identity.py"]
        for needle in ('"x-tunewire-principal"', '"x-tunewire-internal-token"', "class Principal")
    }
