"""What every spec model shares: the strict base model, the limits in force, the trainer's names."""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo

from services.config import Limits
from services.specs.errors import error_at

# The trainer's names (a unit test checks these against its tables).
ACTIVATIONS = Literal["relu", "leaky_relu", "sigmoid", "tanh", "linear"]
OUTPUT_ACTIVATIONS = Literal["softmax", "sigmoid", "linear", "tanh", "relu"]
DATASET_NAMES = Literal[
    "xor",
    "spirals",
    "moons",
    "circles",
    "blobs",
    "sine",
    "digits",
    "iris",
    "wine",
    "breast_cancer",
    "diabetes",
    "arrays",
    "uploaded",
]
INITIALIZER_NAMES = Literal["he", "xavier", "normal"]
LOSS_NAMES = Literal["cross_entropy", "binary_cross_entropy", "mse"]
OPTIMIZER_NAMES = Literal["sgd", "rmsprop", "adam", "adamw"]
SCHEDULE_NAMES = Literal["constant", "step", "exponential", "cosine"]
OBJECTIVE_METRICS = Literal["val_loss", "train_loss", "val_accuracy", "train_accuracy"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


#: The limits in force where a model is validated without a ``limits`` context (the
#: API validates request bodies inside its framework, which passes no context).
LIMITS_IN_FORCE: ContextVar[Limits | None] = ContextVar("sweeplab_limits", default=None)


def limits_in(info: ValidationInfo) -> Limits:
    return (info.context or {}).get("limits") or LIMITS_IN_FORCE.get() or Limits()


SEED_MAX = 2**31 - 1  # stored in an INTEGER column on every backend


# C0 and C1 control characters, DEL, and the Unicode line and paragraph
# separators: in a name or a label they corrupt logs, tables and terminals, and
# PostgreSQL refuses NUL in text outright.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# The JSON types that can hold text (exact types: a request body is parsed JSON).
_TEXT_OR_NESTED = frozenset({str, dict, list, tuple})


def _control_problem(text: str) -> str | None:
    found = CONTROL_CHARACTERS.search(text)
    if found is None:
        return None
    return (
        f"contains a control character (U+{ord(found.group()):04X} at position "
        f"{found.start()}); names and strings must be printable text"
    )


def control_character_error(data: Any) -> tuple[str, str] | None:
    """(dotted loc, message) of the first string in the JSON ``data`` (a value
    or an object's key) that holds a control character, else None."""
    if not _holds_control_character(data):  # the common case, without building locs
        return None
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, str):
            if problem := _control_problem(value):
                return loc, problem
        elif isinstance(value, dict):
            items = []
            for key, item in value.items():
                key = str(key)
                if problem := _control_problem(key):
                    return loc, f"the key {key!r} {problem}"
                items.append((f"{loc}.{key}" if loc else key, item))
            stack.extend(reversed(items))
        elif isinstance(value, list | tuple):
            nested = [
                (f"{loc}.{i}" if loc else str(i), item)
                for i, item in enumerate(value)
                if type(item) in _TEXT_OR_NESTED
            ]
            stack.extend(reversed(nested))
    return None


def _holds_control_character(data: Any) -> bool:
    search = CONTROL_CHARACTERS.search
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if search(value):
                return True
        elif isinstance(value, dict):
            if any(search(str(key)) for key in value):
                return True
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            # numbers (most of an inline X) cost one set lookup each
            stack.extend([v for v in value if type(v) in _TEXT_OR_NESTED])
    return False


def reject_control_characters(data: Any) -> Any:
    """A ``mode="before"`` model validator: a control character anywhere in a
    request body is an error at its field (``name``, ``dataset.y.3``)."""
    if (found := control_character_error(data)) is not None:
        raise error_at(*found)
    return data
