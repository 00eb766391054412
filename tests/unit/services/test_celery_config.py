"""The Celery configuration's rules: JSON only, late acks, one message at a time, and
task events on for Flower (a real worker's events: tests/integration/test_monitoring.py)."""

from __future__ import annotations

from services.celery_app import make_celery
from services.config import Settings


def test_json_late_acks_one_at_a_time_and_task_events():
    conf = make_celery(Settings.from_env({})).conf
    assert (conf.task_serializer, conf.result_serializer) == ("json", "json")
    assert list(conf.accept_content) == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_send_task_events and conf.task_send_sent_event
