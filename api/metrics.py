"""/metrics: the service in Prometheus' text format, through prometheus-flask-exporter.

Request latency per route is the exporter's own histogram,
``flask_http_request_duration_seconds{method, url_rule, status}``, grouped by
the route's rule (``/api/v1/jobs/<job_id>``; ``None`` when no route matched), never
by the raw path, so that ids do not make a series each; with
``flask_http_request_total{method, status}``.
The rest is read when Prometheus scrapes, and costs the requests nothing:

    sweeplab_jobs{status}            jobs by status (one grouped COUNT over ``jobs``)
    sweeplab_epochs_trained          epochs the jobs in the database have recorded
                                     (a gauge: deleting jobs lowers it)
    sweeplab_queue_depth{queue}      messages waiting in Redis (LLEN of each queue)
    sweeplab_queue_unacked           messages delivered to workers, not yet acknowledged
    sweeplab_metrics_source_up{source}  0 when the database or Redis did not answer
                                     (their numbers are left out, the rest still served)

Several processes: under gunicorn every worker process counts its own
requests. With ``PROMETHEUS_MULTIPROC_DIR`` set (``make up`` sets it to
``var/prometheus``, emptied at each start of the API), prometheus_client keeps
each process's counts in files there and a scrape sums them over every
process (the client library's multiprocess mode), whichever process answers.

Access: the API's rule. A bearer token, as for every /api/v1 route (Prometheus
sends one with ``authorization: {credentials_file: ...}``), and an admin's, as
the numbers are everyone's; with ``SWEEPLAB_AUTH=off`` it is as open as the API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import redis
from flask import Flask, Response, current_app, request
from flask_openapi3 import APIBlueprint, Tag
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_flask_exporter import PrometheusMetrics
from sqlalchemy.exc import DBAPIError

from api.auth import SECURITY
from api.context import db, principal, services
from api.errors import APIError
from api.jobs import errors
from services.monitoring import job_totals

bp = APIBlueprint("metrics", __name__, abp_tags=[Tag(name="metrics")], abp_security=SECURITY)

TEXT = {"schema": {"type": "string"}}
EXPORTER = "prometheus"  # app.extensions key


def init_app(app: Flask) -> None:
    """Time every request by its route. Call before the other ``before_request`` hooks,
    so that a request refused by them (a 401) is timed too."""
    # A registry per app: a second app in a process (tests) would clash in the global
    # one, and the exporter then skips its hooks silently. path=None: /metrics is ours.
    exporter = PrometheusMetrics(
        app=None, path=None, registry=CollectorRegistry(), group_by="url_rule"
    )
    exporter.init_app(app)
    app.extensions[EXPORTER] = exporter


@bp.get(
    "/metrics",
    operation_id="getMetrics",
    summary="The service's metrics, in Prometheus' text format (admin)",
    responses={
        200: {"content": {"text/plain": TEXT, "application/openmetrics-text": TEXT}},
        **errors(403),
    },
)
def metrics():
    """Serve request latency per route, jobs by status, epochs trained and queue depth."""
    if not principal().is_admin:
        raise APIError(403, "only an admin reads the service's metrics")
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # every process's request metrics
    else:
        registry.register(current_app.extensions[EXPORTER].registry)
    registry.register(_Families(list(_scraped())))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})


def _scraped() -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "sweeplab_metrics_source_up",
        "1 when the source answered this scrape (its metrics are then present)",
        labels=["source"],
    )
    try:
        counts, epochs = job_totals(db())
    except DBAPIError:
        up.add_metric(["database"], 0)
    else:
        up.add_metric(["database"], 1)
        jobs = GaugeMetricFamily("sweeplab_jobs", "Jobs by status", labels=["status"])
        for status, count in counts.items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "sweeplab_epochs_trained",
            "Epochs recorded by the jobs in the database (the sum of their epochs_done; "
            "a reused job's copied epochs count too)",
            value=epochs,
        )
    dispatcher = services().dispatcher
    try:
        waiting, unacked = dispatcher.queue_depths()
    except (redis.RedisError, OSError):
        dispatcher.close()  # a fresh connection next time
        up.add_metric(["redis"], 0)
    else:
        up.add_metric(["redis"], 1)
        depth = GaugeMetricFamily(
            "sweeplab_queue_depth", "Messages waiting in a Celery queue", labels=["queue"]
        )
        for queue, length in waiting.items():
            depth.add_metric([queue], length)
        yield depth
        yield GaugeMetricFamily(
            "sweeplab_queue_unacked",
            "Messages delivered to a worker and not yet acknowledged (jobs being run)",
            value=unacked,
        )
    yield up


class _Families:
    """A collector of metric families read once (a registry asks ``collect`` per encode)."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families
