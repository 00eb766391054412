"""Reading one field of a JSON spec section, with its dotted location in errors.

Each reader takes the section ``d``, its location ``loc`` (``"hyperparameters"``)
and the ``key``; a missing field takes its default (``MISSING``: required), and
a wrong one raises ``SpecError`` at ``loc.key`` naming what is allowed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MISSING = object()


class SpecError(ValueError):
    """A spec problem at ``loc`` (dotted path); ``str(err)`` is ``"loc: message"``."""

    def __init__(self, loc: str, message: str):
        super().__init__(f"{loc}: {message}")
        self.loc = loc
        self.message = message


def read_section(d: Any, loc: str, allowed: tuple[str, ...] | set[str]) -> dict:
    if not isinstance(d, dict):
        raise SpecError(loc, f"must be an object, got {type(d).__name__}")
    for key in sorted(d, key=str):
        if key not in allowed:
            raise SpecError(
                f"{loc}.{key}" if loc else str(key),
                f"unknown field; allowed: {', '.join(sorted(allowed))}",
            )
    return d


def join_loc(loc: str, key: str) -> str:
    return f"{loc}.{key}" if loc else key


def _field(d, loc, key, default, nullable: bool, kind: str) -> tuple[str, Any]:
    """Return (path, value) of ``d[key]``: required unless defaulted, null only if nullable."""
    path = join_loc(loc, key)
    v = d.get(key, default)
    if v is MISSING:
        raise SpecError(path, "is required")
    if v is None and not nullable:
        raise SpecError(path, f"must be {kind}, got null")
    return path, v


def read_number_or_none(
    d, loc, key, default=MISSING, *, gt=None, ge=None, lt=None, le=None, nullable=True
) -> float | None:
    path, v = _field(d, loc, key, default, nullable, "a number")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise SpecError(path, f"must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise SpecError(path, f"must be a finite number, got {v}")
    for bound, ok, word in (
        (gt, lambda b: v > b, ">"),
        (ge, lambda b: v >= b, ">="),
        (lt, lambda b: v < b, "<"),
        (le, lambda b: v <= b, "<="),
    ):
        if bound is not None and not ok(bound):
            raise SpecError(path, f"must be {word} {bound}, got {v}")
    return v


def read_int_or_none(
    d, loc, key, default=MISSING, *, ge=None, le=None, nullable=True
) -> int | None:
    path, v = _field(d, loc, key, default, nullable, "an integer")
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise SpecError(path, f"must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if ge is not None and v < ge:
        raise SpecError(path, f"must be >= {ge}, got {v}")
    if le is not None and v > le:
        raise SpecError(path, f"must be <= {le}, got {v}")
    return v


def read_number(d, loc, key, default=MISSING, **bounds) -> float:
    """A required-or-defaulted finite number within ``bounds`` (gt, ge, lt, le)."""
    value = read_number_or_none(d, loc, key, default, nullable=False, **bounds)
    assert value is not None
    return value


def read_int(d, loc, key, default=MISSING, **bounds) -> int:
    value = read_int_or_none(d, loc, key, default, nullable=False, **bounds)
    assert value is not None
    return value


def read_choice(d, loc, key, choices, default=MISSING) -> str:
    value = read_choice_or_none(d, loc, key, choices, default, nullable=False)
    assert value is not None
    return value


def read_bool(d, loc, key, default) -> bool:
    v = d.get(key, default)
    if not isinstance(v, (bool, np.bool_)):
        raise SpecError(join_loc(loc, key), f"must be true or false, got {v!r}")
    return bool(v)


def read_choice_or_none(d, loc, key, choices, default=MISSING, *, nullable=True) -> str | None:
    path = join_loc(loc, key)
    v = d.get(key, default)
    if v is MISSING:
        raise SpecError(path, f"is required; one of: {', '.join(choices)}")
    if v is None and nullable:
        return None
    if not isinstance(v, str) or v not in choices:
        raise SpecError(path, f"must be one of: {', '.join(choices)}; got {v!r}")
    return v
