"""SpecValidationError, and pydantic's errors as its dotted-path details."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError


class SpecValidationError(ValueError):
    """A spec that failed validation; ``details`` is ``[{"loc": "a.b.0", "msg": ...}]``."""

    def __init__(self, message: str, details: list[dict[str, str]]):
        super().__init__(message)
        self.details = details


def error_at(loc: str, message: str) -> PydanticCustomError:
    """A model-level error that names the field ``loc`` (relative to the model)."""
    return PydanticCustomError("value_error", message, {"loc": loc})


NOT_OBJECT = {"loc": "", "msg": "expected a JSON object"}


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in parts)


def pydantic_details(err: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    details = []
    for e in err.errors(include_url=False):
        # Drop union/validator tags ("function-after[...]"), keep the field path.
        parts = [p for p in e["loc"] if not (isinstance(p, str) and "[" in p)]
        loc = _loc(parts)
        if e.get("ctx", {}).get("loc"):
            loc = f"{loc}.{e['ctx']['loc']}".strip(".")
        msg = e["msg"].removeprefix("Value error, ")
        details.append({"loc": f"{prefix}.{loc}".strip(".") if prefix else loc, "msg": msg})
    return details


def validation_error(err: ValidationError) -> SpecValidationError:
    """The 422 for a request body that failed its model (``err.title`` names the model)."""
    kind = {"JobCreate": "job", "SweepCreate": "sweep"}.get(err.title, "request")
    return SpecValidationError(f"invalid {kind} spec", pydantic_details(err))
