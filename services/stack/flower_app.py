"""The Celery app Flower watches with: ``celery -A services.stack.flower_app flower``.

An entry point, like ``worker.app``: the app is built here from the environment,
with the service's own configuration (broker, JSON only, the queues), and
without importing the worker's tasks (Flower needs their events, not their code).
"""

from __future__ import annotations

from services.celery_app import make_celery
from services.config import Settings

app = make_celery(Settings.from_env())
