"""``worker.app`` with Celery task events off: the baseline of monitoring_overhead.py."""

from __future__ import annotations

from worker.app import app

app.conf.update(worker_send_task_events=False, task_send_sent_event=False)

__all__ = ["app"]
