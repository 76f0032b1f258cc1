"""Confinement of client-given paths: dataset files to the data roots, model
directories to the model roots, and neither into the state directory.

A path is refused (PERMISSION_DENIED) before anything is opened when it has a
`..` segment, lies outside every root, or resolves, through a symlink, to a
place outside every root. Only then do we look at what is there, so a refusal
never says whether something exists.

The state directory (`$TUNEWIRE_HOME`: keys, `state.db`, other tenants' datasets
and jobs) is never reachable through a root that contains it (the default data
root, the start directory, usually does); only a root an admin named *inside* it
(`--data-root $TUNEWIRE_HOME/shared`, the model root `$TUNEWIRE_HOME/models`)
opens that part of it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath

import grpc

from tunewire.errors import FieldViolation, ServiceError, invalid_argument
from tunewire.reasons import Reason

MAX_PATH_LENGTH = 4096


@dataclass(frozen=True)
class Roots:
    """Where client paths of one kind may lead."""

    dirs: tuple[Path, ...]
    state_dirs: tuple[Path, ...] = ()  # the home, and the artifact root when it is elsewhere
    kind: str = "data"  # "data" or "model": named in refusals

    @property
    def reason(self) -> Reason:
        if self.kind == "model":
            return Reason.PATH_OUTSIDE_MODEL_ROOTS
        return Reason.PATH_OUTSIDE_DATA_ROOTS


# For in-process callers with no client behind them (benchmarks, tests starting workers).
ANYWHERE = Roots((Path(os.sep),), kind="model")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _as_roots(roots: Roots | tuple[Path, ...]) -> Roots:
    return roots if isinstance(roots, Roots) else Roots(tuple(roots))


def _allowed(path: str, roots: list[str], state_dirs: list[str]) -> bool:
    """Inside a root, and inside the state directory only through a root inside it."""
    for root in roots:
        if not _inside(path, root):
            continue
        in_state = any(_inside(path, s) for s in state_dirs)
        if not in_state or any(_inside(root, s) for s in state_dirs):
            return True
    return False


def check_usable(raw: str, field: str) -> None:
    """A client string that cannot be a path at all is INVALID_ARGUMENT, not a 5xx."""
    if "\x00" in raw or len(raw) > MAX_PATH_LENGTH:
        raise invalid_argument(
            [
                FieldViolation(
                    field, f"is not a usable path (NUL byte or over {MAX_PATH_LENGTH} characters)"
                )
            ]
        )


def confined_path(raw: str, roots: Roots | tuple[Path, ...], field: str) -> str:
    """The real path of `raw` if it stays inside the roots; nothing is opened."""
    roots = _as_roots(roots)
    if not raw:
        raise invalid_argument([FieldViolation(field, "is empty; give a path")])
    check_usable(raw, field)
    if ".." in PurePath(raw).parts:
        raise _denied(raw, field, "'..' segments are not allowed", roots)
    lexical = os.path.abspath(os.path.expanduser(raw))
    real_roots = [os.path.realpath(r) for r in roots.dirs]
    lexical_roots = [os.path.abspath(r) for r in roots.dirs]
    states = [f(s) for s in roots.state_dirs for f in (os.path.abspath, os.path.realpath)]
    if not _allowed(lexical, lexical_roots + real_roots, states):
        raise _denied(raw, field, f"it is outside the allowed {roots.kind} roots", roots)
    real = os.path.realpath(lexical)
    if not _allowed(real, real_roots, states):
        raise _denied(
            raw, field, f"it leads outside the allowed {roots.kind} roots through a symlink", roots
        )
    return real


def confine(raw: str, roots: Roots | tuple[Path, ...], field: str) -> Path:
    """The real path of `raw` if it is a regular file inside one of `roots`."""
    real = confined_path(raw, roots, field)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise ServiceError(
            grpc.StatusCode.NOT_FOUND,
            f"{field}: no file at {raw!r}",
            reason=Reason.FILE_NOT_FOUND,
            violations=[FieldViolation(field, f"no file at {raw!r}")],
        ) from None
    except OSError as exc:
        raise invalid_argument(
            [FieldViolation(field, f"cannot read {raw!r}: {exc.strerror}")]
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise invalid_argument([FieldViolation(field, f"{raw!r} is not a regular file")])
    return Path(real)


def _denied(raw: str, field: str, why: str, roots: Roots) -> ServiceError:
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{field}: path {shown!r} refused: {why}",
        reason=roots.reason,
        violations=[FieldViolation(field, f"refused: {why}")],
    )


def huggingface_cache() -> Path:
    """Where huggingface_hub keeps snapshots (its own environment rules, without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"
