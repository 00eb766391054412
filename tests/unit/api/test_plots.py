"""The picture routes: a job's curves and layers, a sweep's LR map (PNG and JSON) and report.

Every answer is checked against the OpenAPI document (the contract client): the
PNG routes are documented as image/png, the report as text/html.
"""

from __future__ import annotations

import copy

import pytest

from tests.auth_support import authorize, new_token
from tests.conftest import XOR_JOB
from tests.reports_support import API, finished_sweep, lr_sweep_body, run_all
from tests.unit.api.contract import contract_client

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def test_a_jobs_curves_and_layers(client, app, dispatcher):
    job = client.post(f"{API}/jobs", json=copy.deepcopy(XOR_JOB)).get_json()
    for kind in ("curves", "layers"):  # queued: no epoch to draw yet
        response = client.get(f"{API}/jobs/{job['id']}/plots/{kind}.png")
        assert response.status_code == 409 and error_code(response) == "no_epochs"
    run_all(app, dispatcher)
    for kind in ("curves", "layers"):
        response = client.get(f"{API}/jobs/{job['id']}/plots/{kind}.png")
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert response.data[:8] == PNG_MAGIC and len(response.data) > 5_000
        assert response.headers["Cache-Control"] == "no-cache"  # a running job's grows
    missing = client.get(f"{API}/jobs/{'0' * 32}/plots/curves.png")
    assert missing.status_code == 404 and error_code(missing) == "not_found"


def test_a_sweeps_lr_map(client, app, dispatcher):
    sweep = finished_sweep(client, app, dispatcher, lr_sweep_body())
    png = client.get(f"{API}/sweeps/{sweep['id']}/lr-map.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data[:8] == PNG_MAGIC
    data = client.get(f"{API}/sweeps/{sweep['id']}/lr-map.json")
    assert data.status_code == 200 and data.mimetype == "application/json"
    body = data.get_json()
    assert body["sweep_id"] == sweep["id"]
    assert body["learning_rate_parameter"] == "hyperparameters.learning_rate"
    assert body["other_parameters"] == ["hyperparameters.batch_size"]
    assert [c["label"] for c in body["combinations"]] == ["bs=16", "bs=32"]
    assert len(body["points"]) == 8
    statuses = {p["job_id"]: p["status"] for p in body["points"]}
    diverged = [j for j, s in statuses.items() if s == "diverged"]
    assert diverged and {c["trial_id"] for c in body["ceilings"]} <= set(diverged)
    assert all(c["source"] == "sweep" and c["learning_rate"] == 1e4 for c in body["ceilings"])
    assert body["best"]["job_id"] == sweep["best_trial"]["job_id"]


def test_a_sweep_without_a_learning_rate_has_no_map_but_a_report(client, app, dispatcher):
    body = lr_sweep_body(parameters={"hyperparameters.batch_size": {"values": [16, 32]}})
    sweep = finished_sweep(client, app, dispatcher, body)
    for suffix in ("png", "json"):
        response = client.get(f"{API}/sweeps/{sweep['id']}/lr-map.{suffix}")
        assert response.status_code == 409 and error_code(response) == "no_learning_rate"
        assert "does not sweep a learning rate" in response.get_json()["error"]["message"]
    report = client.get(f"{API}/sweeps/{sweep['id']}/report")
    assert report.status_code == 200 and report.mimetype == "text/html"


def test_a_running_sweeps_pictures(client):
    sweep = client.post(f"{API}/sweeps", json=lr_sweep_body()).get_json()
    body = client.get(f"{API}/sweeps/{sweep['id']}/lr-map.json").get_json()
    assert body["points"] == [] and body["ceilings"] == [] and body["best"] is None
    assert client.get(f"{API}/sweeps/{sweep['id']}/lr-map.png").data[:8] == PNG_MAGIC
    html = client.get(f"{API}/sweeps/{sweep['id']}/report").get_data(as_text=True)
    assert "No trial has an objective value yet." in html


@pytest.mark.parametrize("top", ["0", "201", "x", "-1"])
def test_a_bad_top_is_a_400(client, top):
    sweep = client.post(f"{API}/sweeps", json=lr_sweep_body()).get_json()
    response = client.get(f"{API}/sweeps/{sweep['id']}/report?top={top}")
    assert response.status_code == 400 and error_code(response) == "bad_request"


def test_unknown_sweeps_are_404(client):
    for route in ("lr-map.png", "lr-map.json", "report"):
        response = client.get(f"{API}/sweeps/{'0' * 32}/{route}")
        assert response.status_code == 404 and error_code(response) == "not_found"


def test_only_the_owner_and_an_admin_see_the_pictures(app, dispatcher):
    sessions = app.extensions["sweeplab"].sessions
    alice = authorize(contract_client(app), new_token(sessions, "alice", admin=False))
    bob = authorize(contract_client(app), new_token(sessions, "bob", admin=False))
    admin = authorize(contract_client(app), new_token(sessions, "root", admin=True))
    sweep = finished_sweep(alice, app, dispatcher, lr_sweep_body())
    trial = alice.get(f"{API}/sweeps/{sweep['id']}/trials").get_json()["items"][0]["id"]
    urls = [
        f"{API}/jobs/{trial}/plots/curves.png",
        f"{API}/jobs/{trial}/plots/layers.png",
        f"{API}/sweeps/{sweep['id']}/lr-map.png",
        f"{API}/sweeps/{sweep['id']}/lr-map.json",
        f"{API}/sweeps/{sweep['id']}/report",
    ]
    for url in urls:
        assert alice.get(url).status_code == 200, url
        assert admin.get(url).status_code == 200, url
        theirs = bob.get(url)
        assert theirs.status_code == 404 and error_code(theirs) == "not_found", url
        anonymous = authorize(contract_client(app), None).get(url)
        assert anonymous.status_code == 401, url


def test_the_map_shows_the_ceiling_the_sweep_keeps_and_the_trials_it_skipped(
    client, app, dispatcher
):
    body = lr_sweep_body(
        parameters={
            "hyperparameters.learning_rate": {"values": [0.03, 1e4, 1e5]},
            "hyperparameters.batch_size": {"values": [16]},
        },
        max_concurrency=1,  # 1e4 diverges before 1e5 is created: 1e5 is skipped
    )
    sweep = finished_sweep(client, app, dispatcher, body)
    data = client.get(f"{API}/sweeps/{sweep['id']}/lr-map.json").get_json()
    status = {p["learning_rate"]: p["status"] for p in data["points"]}
    assert status == {0.03: "succeeded", 1e4: "diverged", 1e5: "skipped"}
    skipped = next(p for p in data["points"] if p["status"] == "skipped")
    assert skipped["objective"] is None and "skipped" in skipped["reason"]
    # the same ceiling as the sweep's own answer (services.sweeps.ceiling)
    kept = [(c["learning_rate"], c["trial_id"]) for c in sweep["divergence_ceiling"]]
    assert kept == [(c["learning_rate"], c["trial_id"]) for c in data["ceilings"]]
    assert [c["combination"] for c in data["ceilings"]] == ["bs=16"]
    assert data["ceilings"][0]["source"] == "sweep"
    html = client.get(f"{API}/sweeps/{sweep['id']}/report").get_data(as_text=True)
    assert "1 skipped" in html and "bs=16: lr &ge; 10000" in html
