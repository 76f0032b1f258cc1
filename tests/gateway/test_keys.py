"""API keys: the file keeps hashes only, `tunewire keys` manages it, the key ring
recognizes keys (and new ones without a restart), bad files are refused by line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

from tunewire.cli.keys import run_keys
from tunewire.gateway.keys import (
    ENV_KEY_NAME,
    KeyRing,
    KeysFileError,
    add_key,
    read_keys_file,
    remove_key,
)

pytestmark = pytest.mark.timeout(60)


def test_create_prints_the_key_once_and_stores_only_its_hash(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    assert run_keys(["create", "alice", "--keys-file", str(path)]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("tw_") and len(key) > 40
    assert "alice" in err and key not in err
    text = path.read_text()
    assert key not in text
    assert hashlib.sha256(key.encode()).hexdigest() in text
    assert os.stat(path).st_mode & 0o777 == 0o600
    [entry] = read_keys_file(path)
    assert (entry.name, entry.role) == ("alice", "member")


def test_create_admin_and_list_and_revoke(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    assert run_keys(["create", "root", "--admin", "--keys-file", str(path)]) == 0
    assert run_keys(["create", "bob", "--keys-file", str(path)]) == 0
    capsys.readouterr()
    assert run_keys(["list", "--keys-file", str(path)]) == 0
    listed = [line.split("\t")[:2] for line in capsys.readouterr().out.splitlines()]
    assert listed == [["root", "admin"], ["bob", "member"]]
    assert run_keys(["revoke", "bob", "--keys-file", str(path)]) == 0
    assert [e.name for e in read_keys_file(path)] == ["root"]


def test_create_refuses_duplicate_and_reserved_names(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    assert run_keys(["create", "alice", "--keys-file", str(path)]) == 0
    assert run_keys(["create", "alice", "--keys-file", str(path)]) == 1
    assert "exists already" in capsys.readouterr().err
    for bad in ("local", "anonymous", "has space", "-dash", "x" * 65):
        assert run_keys(["create", "--keys-file", str(path), "--", bad]) == 1
    assert len(read_keys_file(path)) == 1


def test_default_keys_file_is_under_tunewire_home(tmp_path):
    env = {**os.environ, "TUNEWIRE_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tunewire.cli.keys import run_keys; import sys; sys.exit(run_keys(['create', 'carol']))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    key = out.stdout.strip()
    ring = KeyRing(tmp_path / "home" / "keys.yaml")
    assert ring.authenticate(key).name == "carol"


def test_concurrent_creates_lose_no_key(tmp_path):
    path = tmp_path / "keys.yaml"
    keys: dict[str, str] = {}

    def create(i: int) -> None:
        keys[f"user{i}"] = add_key(path, f"user{i}", "member")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ring = KeyRing(path)
    assert len(ring) == 8
    for name, key in keys.items():
        assert ring.authenticate(key).name == name


def test_key_ring_recognizes_keys_roles_and_nothing_else(tmp_path):
    path = tmp_path / "keys.yaml"
    alice = add_key(path, "alice", "member")
    root = add_key(path, "root", "admin")
    ring = KeyRing(path, env_keys=("single-user-secret",))
    assert ring.authenticate(alice).name == "alice" and not ring.authenticate(alice).admin
    assert ring.authenticate(root).admin
    env = ring.authenticate("single-user-secret")
    assert env.name == ENV_KEY_NAME and env.admin
    for wrong in (
        "",
        alice[:-1],
        alice + "x",
        "tw_" + "A" * 43,
        hashlib.sha256(alice.encode()).hexdigest(),
    ):
        assert ring.authenticate(wrong) is None


def test_key_ring_picks_up_new_and_revoked_keys_without_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(KeyRing, "RELOAD_CHECK_SECONDS", 0.0)
    path = tmp_path / "keys.yaml"
    ring = KeyRing(path)
    assert len(ring) == 0
    key = add_key(path, "dave", "member")
    assert ring.authenticate(key).name == "dave"
    time.sleep(0.01)  # a new mtime for the rewrite
    remove_key(path, "dave")
    assert ring.authenticate(key) is None


def test_a_broken_edit_keeps_the_last_good_keys(tmp_path, monkeypatch):
    path = tmp_path / "keys.yaml"
    key = add_key(path, "erin", "member")
    monkeypatch.setattr(KeyRing, "RELOAD_CHECK_SECONDS", 0.0)
    ring = KeyRing(path)
    path.write_text("keys: [")
    assert ring.authenticate(key).name == "erin"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keys: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        (
            "keys:\n  - name: a\n    role: owner\n    sha256: '" + "0" * 64 + "'\n",
            ":2: field 'role' must be 'admin' or 'member', got 'owner'",
        ),
        ("keys:\n  - name: a\n    role: member\n", ":2: field 'sha256' is required"),
        ("keys:\n  - name: a\n    role: member\n    sha256: xyz\n", "64 lowercase hex digits"),
        (
            "keys:\n  - name: a\n    role: member\n    sha256: '"
            + "0" * 64
            + "'\n    colour: red\n",
            "unknown field 'colour'",
        ),
        (
            "keys:\n  - {name: a, role: member, sha256: '"
            + "0" * 64
            + "'}\n  - {name: a, role: admin, sha256: '"
            + "1" * 64
            + "'}\n",
            ":3: name 'a' appears twice",
        ),
        ("keys:\n  - {name: local, role: admin, sha256: '" + "0" * 64 + "'}\n", "reserved"),
    ],
)
def test_bad_keys_files_are_refused_with_file_and_line(tmp_path, text, message):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeysFileError) as info:
        KeyRing(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_keys_file_means_no_keys(tmp_path):
    ring = KeyRing(tmp_path / "nothing.yaml")
    assert len(ring) == 0
    assert ring.authenticate("anything") is None
