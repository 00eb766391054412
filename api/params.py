"""Path and query parameters of the routes, and the health answers, as pydantic models.

flask-openapi3 validates a route's ``path`` and ``query`` arguments with these
and documents them. A query model's name ends in ``Query``: its failures are a
400 naming the argument (a body's are a 422, see ``api.errors``).
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.db.models import JOB_STATUSES, SWEEP_STATUSES


class JobPath(BaseModel):
    job_id: str


class SweepPath(BaseModel):
    sweep_id: str


class QueryModel(BaseModel):
    """A query string's model. flask-openapi3 reads the model's JSON schema on every
    request (to find its list fields): ~1 ms of CPU each time, so it is made once per
    class and arguments here, and handed out as a copy."""

    _schemas: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = repr((cls.__module__, cls.__qualname__, args, sorted(kwargs.items(), key=str)))
        schema = QueryModel._schemas.get(key)
        if schema is None:
            schema = super().model_json_schema(*args, **kwargs)
            QueryModel._schemas[key] = schema
        return copy.deepcopy(schema)


class CursorQuery(QueryModel):
    """A page of a list: ``limit`` rows after ``cursor``."""

    cursor: str | None = Field(None, description="next_cursor of the previous page")
    limit: Annotated[int, Field(ge=1, le=200)] = 50

    @field_validator("cursor", mode="before")
    @classmethod
    def _empty_cursor(cls, value: Any) -> Any:
        return value or None

    @field_validator("limit", mode="before")
    @classmethod
    def _limit(cls, value: Any) -> Any:
        # ASCII digits only: int() would also take "٣" or " 5".
        if isinstance(value, str) and not (
            re.fullmatch(r"[0-9]{1,4}", value) and 1 <= int(value) <= 200
        ):
            raise ValueError("limit must be an integer from 1 to 200")
        return value


class PageQuery(CursorQuery):
    """A page of a list, newest first: ``limit`` rows after ``cursor``, of some ``status``."""

    KNOWN_STATUSES: ClassVar[tuple[str, ...]] = JOB_STATUSES

    status: str | None = Field(None, description="comma-separated statuses")

    @field_validator("status")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        statuses = [s.strip() for s in (value or "").split(",") if s.strip()]
        known = cls.KNOWN_STATUSES
        unknown = sorted(set(statuses) - set(known))
        if unknown:
            raise ValueError(f"unknown status {', '.join(unknown)}; known: {', '.join(known)}")
        return ",".join(statuses) or None

    def statuses(self) -> list[str] | None:
        return self.status.split(",") if self.status else None


class JobListQuery(PageQuery):
    sweep: str | None = Field(None, description="only the trials of this sweep")


class TrialListQuery(PageQuery):
    pass


class LeaderboardQuery(CursorQuery):
    """A page of a sweep's leaderboard, best first."""


class SweepListQuery(PageQuery):
    KNOWN_STATUSES: ClassVar[tuple[str, ...]] = SWEEP_STATUSES


class MetricsQuery(QueryModel):
    format: Literal["json", "csv"] = "json"


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"]
    service: Literal["sweeplab"]


class Readiness(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='"ok" or "error: <kind>", by dependency')
