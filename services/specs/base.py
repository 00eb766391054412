"""What every spec model shares: the strict base model, the limits in force, the trainer's names."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo

from services.config import Limits

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
