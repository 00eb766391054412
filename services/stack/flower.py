"""Flower, the Celery monitor, as ``up`` runs it: on 127.0.0.1, behind the API's rule.

The API wants a bearer token; Flower knows only HTTP basic auth, so it is
started with one credential, user ``admin`` and the local admin token
(``var/admin.token``) as the password: whoever may call the API as the local
admin may look at Flower, nobody else. The credential reaches Flower through
its environment (``FLOWER_BASIC_AUTH``), which only its owner can read, never
through its command line, which ``ps`` shows to every user. Flower runs
read-only: stopping workers, resizing pools or revoking tasks from it would
go around the jobs' lifecycle (leases, checkpoints, release on shutdown);
cancel through the API instead. Flower's own ``/healthcheck`` and ``/metrics``
answer without credentials (upstream's choice; they hold counts, not data).
"""

from __future__ import annotations

import base64
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from services.stack.processes import find_executable, spawn, wait_for

FLOWER_HOST = "127.0.0.1"
FLOWER_USER = "admin"
FLOWER_STARTUP_SECONDS = 60


def flower_port() -> int:
    """Where ``up`` serves Flower: ``SWEEPLAB_FLOWER_PORT``, default 5555."""
    return int(os.environ.get("SWEEPLAB_FLOWER_PORT") or 5555)


def flower_command(host: str, port: int) -> list[str]:
    """The command line that serves Flower on ``host:port`` (no secret in it)."""
    return [
        find_executable("celery"),
        "-A",
        "services.stack.flower_app",
        "flower",
        f"--address={host}",
        f"--port={port}",
        "--read_only=True",
        # tasks kept in memory: enough for a long sweep, bounded
        "--max_tasks=20000",
    ]


def flower_env(env: dict[str, str], token: str) -> dict[str, str]:
    """``env`` for Flower: basic auth as ``admin`` with ``token``, and nothing that
    would open it (an unauthenticated API) or mix its metrics with the API's."""
    out = {k: v for k, v in env.items() if not k.startswith("FLOWER_")}
    out.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out["FLOWER_BASIC_AUTH"] = f"{FLOWER_USER}:{token}"
    return out


def basic_auth_header(token: str) -> str:
    raw = f"{FLOWER_USER}:{token}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def flower_status(url: str, token: str | None, path: str = "/api/tasks?limit=1") -> int | None:
    """The HTTP status Flower at ``url`` answers ``path`` with (credentials when
    ``token`` is given); None when nothing answers."""
    request = urllib.request.Request(url + path)
    if token is not None:
        request.add_header("Authorization", basic_auth_header(token))
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def start_flower(
    env: dict[str, str], token: str, *, host: str, port: int, log_file: Path
) -> subprocess.Popen:
    """Start Flower on ``host:port`` for the broker in ``env`` (``PYTHONPATH`` must
    reach this package) and wait until it answers our credential."""
    proc = spawn(flower_command(host, port), log_file, flower_env(env, token))
    url = f"http://{host}:{port}"
    wait_for(lambda: flower_status(url, token) == 200, "flower", FLOWER_STARTUP_SECONDS, proc)
    return proc
