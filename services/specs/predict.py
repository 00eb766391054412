"""Predictions of a job's trained network: the request (rows in the data's raw units)
and the answer (labels as the user gave them, or numbers, and class probabilities)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from services.specs.base import Strict
from services.specs.public import Public

#: at most this many rows per request
MAX_PREDICT_ROWS = 10_000

Row = Annotated[list[float], Field(min_length=1, description="one sample's input features")]


class PredictRequest(Strict):
    rows: Annotated[
        list[Row],
        Field(
            min_length=1,
            max_length=MAX_PREDICT_ROWS,
            description=(
                "samples in the job's raw feature units (before standardization), "
                "each as wide as the job's input"
            ),
        ),
    ]


class PredictResponse(Public):
    job_id: str
    task: Literal["classification", "regression"]
    predictions: list[Any] = Field(
        description=(
            "one a row: the class label as the user gave it (classification), the "
            "target (regression), or a list of targets (several a row)"
        )
    )
    probabilities: list[list[float | None]] | None = Field(
        description="classification: one probability a class (in the order of classes)"
    )
    classes: list[Any] | None = Field(
        description="classification: the labels, as the user gave them"
    )
