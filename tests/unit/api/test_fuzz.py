"""schemathesis over the API's own OpenAPI document, with an admin's token: no answer
is a server error, whatever the generated request (bodies, paths, queries)."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.auth_support import new_token

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = 25  # per operation: ~20 operations, a few seconds in all


def test_no_generated_request_is_a_server_error(app):
    token = new_token(app.extensions["sweeplab"].sessions)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 19
    for operation in operations:
        fuzz(operation, token, seen)
        if operation.label == "POST /jobs":  # and the documented example, through schemathesis
            case = operation.Case(
                body=json.loads((REPO / "examples" / "job.json").read_text()),
                headers={"Authorization": f"Bearer {token}"},
                media_type="application/json",
            )
            response = case.call()
            seen[(operation.label, response.status_code)] += 1
            case.validate_response(response, checks=[not_a_server_error])
    assert not [key for key in seen if key[1] >= 500]
    # the token was accepted: the requests reached the routes (and a valid job was created)
    assert any(status == 201 for (label, status) in seen if label == "POST /jobs")
    assert not [key for key in seen if key[1] == 401]


def fuzz(operation, token: str, seen: collections.Counter) -> None:
    """Send ``EXAMPLES`` generated requests to one operation; fail on a 5xx."""

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def call(case):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        response = case.call()
        seen[(operation.label, response.status_code)] += 1
        case.validate_response(response, checks=[not_a_server_error])

    call()
