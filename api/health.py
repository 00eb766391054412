"""/healthz (the process is up) and /readyz (the database and Redis answer)."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import text

from api import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer while the process is up (and say whose process it is)."""
    return {"status": "ok", "service": "sweeplab"}


@bp.get("/readyz")
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
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
