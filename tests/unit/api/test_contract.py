"""The API's contract both ways: every route is documented, every answer is documented.

Every other test in this folder talks through :class:`ContractClient`, so each
answer they receive is also checked against ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import copy
import re

import pytest

from services.config import Limits
from tests.auth_support import authorize, new_token
from tests.conftest import XOR_JOB
from tests.unit.api.contract import Contract, ContractClient, contract_client, path_of

API = "/api/v1"


def test_every_route_is_documented_and_every_documented_operation_is_served(app, client):
    contract = client.contract
    served = {
        (path_of(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[-1] != "static"  # Swagger UI's files
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == contract.documented()
    assert {
        ("/healthz", "get"),
        ("/readyz", "get"),
        (f"{API}/openapi.json", "get"),
        (f"{API}/docs", "get"),
    } <= served


def test_the_client_checks_every_answer(client):
    assert isinstance(client, ContractClient)


def sweep_answer(client) -> dict:
    body = {
        "base": copy.deepcopy(XOR_JOB),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.5]}},
    }
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 201
    return response.get_json()


def test_an_undeclared_field_fails_the_check(client):
    contract: Contract = client.contract
    sweep = sweep_answer(client)
    contract.check("GET", f"{API}/sweeps/{sweep['id']}", 200, "application/json", sweep)
    assert sweep["leaderboard"] and {"trial_index", "prune_reason"} <= set(sweep["leaderboard"][0])
    places = (
        lambda b: b,
        lambda b: b["leaderboard"][0],
        lambda b: b["timings"],
        lambda b: b["links"],
        lambda b: b["objective"],
    )
    for place in places:
        tampered = copy.deepcopy(sweep)
        place(tampered)["surprise"] = 1
        with pytest.raises(AssertionError, match="surprise"):
            contract.check("GET", f"{API}/sweeps/{sweep['id']}", 200, "application/json", tampered)


def test_an_undeclared_status_or_content_type_fails_the_check(client):
    contract: Contract = client.contract
    error = {"error": {"code": "internal_error", "message": "internal error", "details": []}}
    with pytest.raises(AssertionError, match="not declared"):
        contract.check("GET", f"{API}/jobs/abc", 500, "application/json", error)
    with pytest.raises(AssertionError, match="text/html"):
        contract.check("GET", f"{API}/jobs/abc", 200, "text/html", None)
    with pytest.raises(AssertionError, match="undocumented"):
        contract.check("GET", f"{API}/nowhere", 200, "application/json", {})


def test_responses_declare_closed_objects(client):
    """The document itself says no undeclared field comes back (pydantic extra='forbid')."""
    schemas = client.contract.document["components"]["schemas"]
    names = (
        "JobPublic",
        "JobPage",
        "SweepPublic",
        "SweepPage",
        "LeaderboardRow",
        "MetricsPublic",
        "ErrorResponse",
        "ErrorBody",
        "MlflowLinks",
        "Progress",
    )
    for name in names:
        assert schemas[name]["additionalProperties"] is False, name
    row = schemas["LeaderboardRow"]["properties"]
    assert {"trial_index", "prune_reason"} <= set(row)


def test_docs_page_is_served_from_the_app_without_a_cdn(client):
    response = client.get(f"{API}/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", html)
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        with client.get(f"{API}/{asset}") as served:  # a file: close it
            assert served.status_code == 200 and served.content_length, asset
    assert 'new URL("openapi.json"' in html


def test_the_apps_limits_reach_the_validated_body(settings, dispatcher):
    from api import create_app

    app = create_app(settings.replace(limits=Limits(max_epochs=3)), dispatcher=dispatcher)
    try:
        client = authorize(contract_client(app), new_token(app.extensions["sweeplab"].sessions))
        spec = copy.deepcopy(XOR_JOB)
        spec["hyperparameters"]["epochs"] = 4
        response = client.post(f"{API}/jobs", json=spec)
        assert response.status_code == 422
        (detail,) = response.get_json()["error"]["details"]
        assert detail == {"loc": "hyperparameters.epochs", "msg": "epochs must be at most 3"}
        spec["hyperparameters"]["epochs"] = 3
        assert client.post(f"{API}/jobs", json=spec).status_code == 201
    finally:
        app.extensions["sweeplab"].engine.dispose()
