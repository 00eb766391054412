"""/metrics: Prometheus' text format, latency per route (by rule), jobs by status,
epochs trained, queue depth, and the API's access rule."""

from __future__ import annotations

import copy
import socket

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from api import create_app
from services.celery_app import Dispatcher
from services.db.models import JOB_STATUSES, Job
from tests.auth_support import authorize, new_token
from tests.conftest import XOR_JOB
from tests.unit.api.contract import contract_client

API = "/api/v1"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a text exposition, by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def latency_count(found, rule: str, status: str, method: str = "GET") -> float | None:
    labels = frozenset({"method": method, "status": status, "url_rule": rule}.items())
    return found.get(("flask_http_request_duration_seconds_count", labels))


def test_latency_is_per_route_rule_not_per_path(client):
    ids = [
        client.post(f"{API}/jobs", json=copy.deepcopy(XOR_JOB)).get_json()["id"] for _ in range(3)
    ]
    for job_id in ids:
        assert client.get(f"{API}/jobs/{job_id}").status_code == 200
    assert client.get(f"{API}/jobs/nope").status_code == 404

    found = scrape(client)
    assert latency_count(found, "/api/v1/jobs/<job_id>", "200") == 3
    assert latency_count(found, "/api/v1/jobs/<job_id>", "404") == 1
    assert latency_count(found, "/api/v1/jobs", "201", method="POST") == 3
    paths = {dict(labels).get("url_rule") for _, labels in found}
    assert not any(job_id in str(p) for p in paths for job_id in ids)  # no raw paths
    total = frozenset({"method": "GET", "status": "200"}.items())
    assert found[("flask_http_request_total", total)] >= 3
    # the histogram has its buckets, and the scrape itself is timed by the next one
    le = frozenset({"method": "GET", "status": "200", "url_rule": "/api/v1/jobs/<job_id>"}.items())
    assert found[("flask_http_request_duration_seconds_bucket", le | {("le", "+Inf")})] == 3
    assert latency_count(scrape(client), "/metrics", "200") == 1


def test_jobs_by_status_and_epochs_trained_are_read_at_scrape_time(client, sessions):
    ids = [
        client.post(f"{API}/jobs", json=copy.deepcopy(XOR_JOB)).get_json()["id"] for _ in range(4)
    ]
    found = scrape(client)
    assert found[("sweeplab_jobs", frozenset({("status", "queued")}))] == 4
    assert found[("sweeplab_epochs_trained", frozenset())] == 0
    with sessions() as session:
        session.execute(
            update(Job).where(Job.id.in_(ids[:2])).values(status="succeeded", epochs_done=3)
        )
        session.execute(update(Job).where(Job.id == ids[2]).values(status="running", epochs_done=1))
        session.commit()

    found = scrape(client)
    jobs = {
        dict(labels)["status"]: v for (name, labels), v in found.items() if name == "sweeplab_jobs"
    }
    assert set(jobs) == set(JOB_STATUSES)  # every status, 0 where none
    assert (jobs["queued"], jobs["running"], jobs["succeeded"], jobs["failed"]) == (1, 1, 2, 0)
    assert found[("sweeplab_epochs_trained", frozenset())] == 7
    # the fake dispatcher's queue (the real one: tests/integration/test_monitoring.py)
    assert found[("sweeplab_queue_depth", frozenset({("queue", "sweeplab")}))] == 4
    for source in ("database", "redis"):
        assert found[("sweeplab_metrics_source_up", frozenset({("source", source)}))] == 1


def test_a_redis_that_does_not_answer_leaves_its_numbers_out(settings):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0")
    app = create_app(settings, dispatcher=Dispatcher(settings))
    try:
        client = authorize(contract_client(app), new_token(app.extensions["sweeplab"].sessions))
        found = scrape(client)
        assert found[("sweeplab_metrics_source_up", frozenset({("source", "redis")}))] == 0
        assert found[("sweeplab_metrics_source_up", frozenset({("source", "database")}))] == 1
        assert not any(name.startswith("sweeplab_queue") for name, _ in found)
        assert ("sweeplab_jobs", frozenset({("status", "queued")})) in found
    finally:
        app.extensions["sweeplab"].engine.dispose()


def test_openmetrics_when_asked(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.mimetype == "application/openmetrics-text"
    assert response.get_data(as_text=True).endswith("# EOF\n")


def test_metrics_follow_the_apis_access_rule(app, client):
    anonymous = authorize(contract_client(app), None)
    refused = anonymous.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.get_json()["error"]["code"] == "unauthorized"
    assert authorize(contract_client(app), "swl_not_a_token").get("/metrics").status_code == 401

    user = new_token(app.extensions["sweeplab"].sessions, "alice", admin=False)
    forbidden = authorize(contract_client(app), user).get("/metrics")
    assert forbidden.status_code == 403  # the numbers are everyone's: an admin's
    assert client.get("/metrics").status_code == 200
    # the refused requests were timed too, under the metrics route
    found = scrape(client)
    assert latency_count(found, "/metrics", "401") == 2
    assert latency_count(found, "/metrics", "403") == 1


def test_with_auth_off_metrics_are_as_open_as_the_api(settings, dispatcher):
    lone = create_app(settings.replace(auth=False), dispatcher=dispatcher)
    try:
        assert contract_client(lone).get("/metrics").status_code == 200
    finally:
        lone.extensions["sweeplab"].engine.dispose()


def test_two_apps_in_one_process_count_apart(settings, dispatcher, client):
    """Each app has its own registry: a second create_app (tests, a second app in a
    process) neither fails on duplicate metrics nor loses its request timing."""
    other = create_app(settings, dispatcher=dispatcher)
    try:
        other_client = authorize(
            contract_client(other), new_token(other.extensions["sweeplab"].sessions)
        )
        assert other_client.get("/healthz").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert latency_count(scrape(other_client), "/healthz", "200") == 1
        assert latency_count(scrape(client), "/healthz", "200") == 2
    finally:
        other.extensions["sweeplab"].engine.dispose()
