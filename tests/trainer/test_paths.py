"""Confinement of server paths to the data roots: refused before anything is opened."""

import os

import grpc
import pytest

from tunewire.errors import ServiceError
from tunewire.trainer.paths import Roots, confine


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.jsonl").write_text("{}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text("{}\n")
    return root, outside


def test_file_inside_a_root_is_allowed(roots):
    root, _ = roots
    assert (
        confine(str(root / "sub" / "data.jsonl"), (root,), "path")
        == (root / "sub" / "data.jsonl").resolve()
    )


def test_relative_path_resolves_against_the_working_directory(roots, monkeypatch):
    root, _ = roots
    monkeypatch.chdir(root)
    assert confine("sub/data.jsonl", (root,), "path").name == "data.jsonl"


@pytest.mark.parametrize(
    "make_path, why",
    [
        (lambda root, out: str(out / "secret.jsonl"), "outside"),
        (lambda root, out: str(root / ".." / "outside" / "secret.jsonl"), "'..'"),
        (lambda root, out: "sub/../../outside/secret.jsonl", "'..'"),
        (lambda root, out: "/etc/passwd", "outside"),
    ],
)
def test_paths_leaving_the_roots_are_permission_denied(roots, monkeypatch, make_path, why):
    root, out = roots
    monkeypatch.chdir(root)
    with pytest.raises(ServiceError) as err:
        confine(make_path(root, out), (root,), "path")
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert why in err.value.message
    assert err.value.violations[0].field == "path"


def test_symlink_leading_out_is_refused(roots):
    root, out = roots
    link = root / "sub" / "link.jsonl"
    os.symlink(out / "secret.jsonl", link)
    with pytest.raises(ServiceError) as err:
        confine(str(link), (root,), "path")
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "symlink" in err.value.message


def test_symlinked_directory_leading_out_is_refused(roots):
    root, out = roots
    os.symlink(out, root / "escape")
    with pytest.raises(ServiceError) as err:
        confine(str(root / "escape" / "secret.jsonl"), (root,), "path")
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_missing_file_inside_a_root_is_not_found(roots):
    root, _ = roots
    with pytest.raises(ServiceError) as err:
        confine(str(root / "nope.jsonl"), (root,), "path")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("raw", ["", "a\x00b"])
def test_unusable_paths_are_invalid_argument(roots, raw):
    root, _ = roots
    with pytest.raises(ServiceError) as err:
        confine(raw, (root,), "path")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_directories_are_not_datasets(roots):
    root, _ = roots
    with pytest.raises(ServiceError) as err:
        confine(str(root / "sub"), (root,), "path")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a regular file" in err.value.violations[0].description


def test_the_state_directories_are_out_of_reach_through_a_root_holding_them(tmp_path):
    home, artifacts = tmp_path / ".tunewire", tmp_path / "shared-artifacts"
    for d in (home / "datasets" / "ds-1", home / "shared", artifacts / "jobs" / "j"):
        d.mkdir(parents=True)
    for f in (
        home / "datasets" / "ds-1" / "raw",
        home / "shared" / "ok.jsonl",
        artifacts / "jobs" / "j" / "train.log",
    ):
        f.write_text("{}\n")
    roots = Roots((tmp_path,), state_dirs=(home, artifacts))
    for target in ("datasets/ds-1/raw", "state.db"):
        with pytest.raises(ServiceError) as err:
            confine(str(home / target), roots, "path")
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.message.endswith("it is outside the allowed data roots")
    with pytest.raises(ServiceError):
        confine(str(artifacts / "jobs" / "j" / "train.log"), roots, "path")
    # A symlink from a root into the home is refused the same way.
    os.symlink(home / "datasets" / "ds-1" / "raw", tmp_path / "innocent.jsonl")
    with pytest.raises(ServiceError) as err:
        confine(str(tmp_path / "innocent.jsonl"), roots, "path")
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    # An admin's root inside the home opens that part, and only that part.
    admin = Roots((tmp_path, home / "shared"), state_dirs=(home, artifacts))
    assert confine(str(home / "shared" / "ok.jsonl"), admin, "path").name == "ok.jsonl"
    with pytest.raises(ServiceError):
        confine(str(home / "datasets" / "ds-1" / "raw"), admin, "path")
