"""Confinement of client-given paths to the trainer's allowed data roots.

A path is refused (PERMISSION_DENIED) before anything is opened when it has a
`..` segment, lies outside every root, or resolves, through a symlink, to a
place outside every root. Only then do we look at what is there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePath

import grpc

from tunewire.errors import FieldViolation, ServiceError, invalid_argument
from tunewire.reasons import Reason

MAX_PATH_LENGTH = 4096


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def confine(raw: str, roots: tuple[Path, ...], field: str) -> Path:
    """The real path of `raw` if it is a regular file inside one of `roots`."""
    if not raw:
        raise invalid_argument([FieldViolation(field, "is empty; give a path to a file")])
    if "\x00" in raw or len(raw) > MAX_PATH_LENGTH:
        raise invalid_argument(
            [
                FieldViolation(
                    field, f"is not a usable path (NUL byte or over {MAX_PATH_LENGTH} characters)"
                )
            ]
        )
    if ".." in PurePath(raw).parts:
        raise _denied(raw, field, "'..' segments are not allowed")
    lexical = os.path.abspath(os.path.expanduser(raw))
    real_roots = [os.path.realpath(r) for r in roots]
    lexical_roots = [os.path.abspath(r) for r in roots]
    if not any(_inside(lexical, r) for r in lexical_roots + real_roots):
        raise _denied(raw, field, "it is outside the allowed data roots")
    real = os.path.realpath(lexical)
    if not any(_inside(real, r) for r in real_roots):
        raise _denied(raw, field, "it leads outside the allowed data roots through a symlink")
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


def _denied(raw: str, field: str, why: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{field}: path {raw!r} refused: {why}",
        reason=Reason.PATH_OUTSIDE_DATA_ROOTS,
        violations=[FieldViolation(field, f"refused: {why}")],
    )
