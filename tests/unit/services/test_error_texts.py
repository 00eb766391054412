"""A job's ``error`` names the cause in words: never SQL, hosts or stack traces
(those go to the log); the trainer's own messages stay, capped."""

from __future__ import annotations

import copy
import logging
import sqlite3
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

import services.trainer
from services.db.models import Job
from services.jobs import run as job_run
from services.jobs.execute import execute_job
from services.jobs.records import MAX_ERROR_CHARS, clip_error, recording_error, training_error
from services.jobs.rows import create_job
from services.specs import validate_job
from services.trainer import SpecError
from tests.conftest import XOR_JOB

SQL = "INSERT INTO job_metrics (job_id, epoch, train_loss) VALUES (?, ?, ?)"
HOST_DETAIL = (
    'connection to server at "db.internal.example" (10.1.2.3), port 5432 failed: '
    "Connection refused\n\tIs the server running on that host?"
)
LEAKS = ("INSERT", "job_metrics", "VALUES", "db.internal", "10.1.2.3", "5432", "Traceback")


def database_down() -> OperationalError:
    return OperationalError(SQL, ("j", 1, 0.5), Exception(HOST_DETAIL))


def make_job(sessions: Any) -> str:
    with sessions() as session:
        job = create_job(session, spec=validate_job(copy.deepcopy(XOR_JOB)))
        session.commit()
        return job.id


def run_and_read_error(settings: Any, sessions: Any, dispatcher: Any) -> tuple[str, str | None]:
    job_id = make_job(sessions)
    status = execute_job(
        settings=settings, session_factory=sessions, dispatcher=dispatcher, job_id=job_id
    )
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return status, job.error


def assert_no_leak(text: str | None) -> None:
    assert text
    for leak in LEAKS:
        assert leak not in text, text
    assert "\n" not in text and len(text) <= MAX_ERROR_CHARS


def test_a_failed_final_flush_stores_words_and_logs_the_sql(
    settings, sessions, dispatcher, monkeypatch, caplog
):
    # No flush during the epochs: everything is written by the final one, which fails.
    settings = settings.replace(flush_seconds=3600.0)

    def record_epochs(*_args: Any, **_kwargs: Any) -> Any:
        raise database_down()

    monkeypatch.setattr(job_run, "record_epochs", record_epochs)
    with caplog.at_level(logging.ERROR, logger="services.jobs.run"):
        status, error = run_and_read_error(settings, sessions, dispatcher)

    assert status == "failed"
    assert_no_leak(error)
    assert error is not None
    assert "database was unavailable while recording the final epochs" in error
    assert SQL in caplog.text  # the detail is in the log


def test_a_database_error_during_the_epochs_stores_words(
    settings, sessions, dispatcher, monkeypatch
):
    def record_epochs(*_args: Any, **_kwargs: Any) -> Any:
        raise database_down()

    monkeypatch.setattr(job_run, "record_epochs", record_epochs)
    status, error = run_and_read_error(settings, sessions, dispatcher)
    assert status == "failed"
    assert_no_leak(error)
    assert error is not None and "database was unavailable" in error


def test_a_trainer_value_error_keeps_its_message(settings, sessions, dispatcher, monkeypatch):
    message = "dataset.y: 3 labels for 4 rows"

    def fit(*_args: Any, **_kwargs: Any) -> Any:
        raise SpecError("dataset.y", "3 labels for 4 rows")

    monkeypatch.setattr(services.trainer, "fit", fit)
    status, error = run_and_read_error(settings, sessions, dispatcher)
    assert status == "failed"
    assert error == f"SpecError: {message}"


def test_a_long_trainer_message_is_capped(settings, sessions, dispatcher, monkeypatch):
    def fit(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("bad value\n" + "x" * 5000)

    monkeypatch.setattr(services.trainer, "fit", fit)
    _, error = run_and_read_error(settings, sessions, dispatcher)
    assert error is not None
    assert error.startswith("ValueError: bad value x")
    assert len(error) == MAX_ERROR_CHARS and error.endswith("\u2026")


@pytest.mark.parametrize(
    "err",
    [
        ConnectionError(f"Error 111 connecting to {HOST_DETAIL}"),
        OSError(f"[Errno 113] No route to host: {HOST_DETAIL}"),
        SystemError(f"internal: {SQL}"),
    ],
    ids=["connection", "os", "other"],
)
def test_an_unexpected_error_is_named_not_quoted(err: BaseException) -> None:
    text = training_error(err)
    assert_no_leak(text)
    assert type(err).__name__ in text and "log" in text


def test_texts_of_database_errors() -> None:
    for err in (database_down(), sqlite3.OperationalError(f"database is locked: {SQL}")):
        assert_no_leak(training_error(err))
        assert_no_leak(recording_error(err))
    assert_no_leak(recording_error(RuntimeError(SQL)))


def test_clip_error_flattens_control_characters() -> None:
    assert clip_error("a\x00b\r\n\tc") == "a b c"
    assert len(clip_error("y" * 10_000)) == MAX_ERROR_CHARS
