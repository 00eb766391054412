"""/healthz (the process is up) and /readyz (the database and Redis answer)."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import text

from api.context import reply, services
from api.params import Health, Readiness

bp = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")])


@bp.get("/healthz", operation_id="healthz", summary="Liveness", responses={200: Health})
def healthz():
    """Answer while the process is up (and say whose process it is)."""
    return reply(Health(status="ok", service="sweeplab"))


@bp.get(
    "/readyz",
    operation_id="readyz",
    summary="Readiness: the database and Redis answer",
    responses={200: Readiness, 503: Readiness},
)
def readyz():
    """Check the database and Redis; 503 when either is unreachable."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as err:
        checks["database"] = f"error: {type(err).__name__}"
    try:
        svc.dispatcher.ping()
        checks["redis"] = "ok"
    except Exception as err:
        svc.dispatcher.close()
        checks["redis"] = f"error: {type(err).__name__}"
    ready = all(v == "ok" for v in checks.values())
    status = "ready" if ready else "unavailable"
    return reply(Readiness(status=status, checks=checks), 200 if ready else 503)
