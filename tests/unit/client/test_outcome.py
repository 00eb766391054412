"""Exit codes: 0 succeeded, 1 ended badly, 2 bad usage or a 4xx, 3 unreachable."""

from __future__ import annotations

import pytest

from client.errors import ApiError, BadInput, SpecFileError, Unreachable
from client.outcome import ENDED_BADLY, OK, UNREACHABLE, USAGE, exit_code_for, outcome_code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ApiError(422, "validation_error", "bad", [{"loc": "a.b", "msg": "no"}]), USAGE),
        (ApiError(404, "not_found", "no job x"), USAGE),
        (ApiError(401, "unauthorized", "who?"), USAGE),
        (ApiError(409, "no_weights", "none"), USAGE),
        (ApiError(503, "unavailable", "database away"), UNREACHABLE),
        (ApiError(500, "internal_error", "bug"), UNREACHABLE),
        (Unreachable("http://x", "refused"), UNREACHABLE),
        (SpecFileError("bad yaml"), USAGE),
        (BadInput("bad csv"), USAGE),
    ],
)
def test_errors(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code


def _job(status: str) -> dict:
    return {"id": "j", "status": status, "progress": {"epoch": 1, "epochs": 3}}


def _sweep(status: str, counts: dict, best: dict | None) -> dict:
    return {"id": "s", "status": status, "n_trials": 4, "counts": counts, "best_trial": best}


@pytest.mark.parametrize(
    ("resource", "code"),
    [
        (_job("succeeded"), OK),
        *((_job(s), ENDED_BADLY) for s in ("failed", "diverged", "cancelled", "timed_out")),
        (_job("running"), ENDED_BADLY),  # not ended: never "done and succeeded"
        (_sweep("done", {"succeeded": 3, "diverged": 1}, {"job_id": "j"}), OK),
        (_sweep("done", {"diverged": 2, "failed": 2}, None), ENDED_BADLY),
        # no trial succeeded: best_trial then names the best cancelled or pruned one
        (_sweep("done", {"cancelled": 2, "failed": 12}, {"job_id": "j"}), ENDED_BADLY),
        (_sweep("done", {"pruned": 3, "diverged": 1}, {"job_id": "j"}), ENDED_BADLY),
        (_sweep("cancelled", {"succeeded": 1, "cancelled": 3}, {"job_id": "j"}), ENDED_BADLY),
        (_sweep("done", {"succeeded": 1, "running": 1}, {"job_id": "j"}), ENDED_BADLY),
    ],
)
def test_outcomes(resource: dict, code: int) -> None:
    assert outcome_code(resource) == code


def test_api_error_shows_message_and_field_paths() -> None:
    error = ApiError(
        422,
        "validation_error",
        "hyperparameters.learning_rate: must be > 0",
        [{"loc": "hyperparameters.learning_rate", "msg": "must be > 0"}],
    )
    assert error.describe().splitlines() == [
        "422 validation_error: hyperparameters.learning_rate: must be > 0",
        "  hyperparameters.learning_rate: must be > 0",
    ]


def test_api_error_does_not_repeat_a_detail_that_is_its_message() -> None:
    # a 409 from resume carries its message as the one detail (loc "sweep")
    message = "sweep s1 is running: nothing to resume"
    error = ApiError(409, "sweep_running", message, [{"loc": "sweep", "msg": message}])
    assert error.describe().splitlines() == ["409 sweep_running: " + message]
