"""Reads never take SQLite's write lock: a reader held open does not block a writer, a
write does not fail because of readers, and an API read is a read (a real SQLite file)."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from services.auth import LAST_USED_RESOLUTION, RECENT
from services.db import ApiToken, Job, ReadOnlySessionError, begin_read
from services.db.models import utcnow
from services.jobs.rows import create_job
from tests.conftest import XOR_JOB

API = "/api/v1"
WRITE_WITHIN = 0.5  # seconds a writer may take while a reader holds its transaction


def add_job(sessions) -> str:
    with sessions() as session:
        job = create_job(session, spec=dict(XOR_JOB))
        session.commit()
        return job.id


def timed_write(sessions, job_id: str, name: str) -> float:
    started = time.monotonic()
    with sessions() as session:
        session.execute(update(Job).where(Job.id == job_id).values(name=name))
        session.commit()
    return time.monotonic() - started


def test_a_reader_held_open_does_not_block_a_writer(app):
    svc = app.extensions["sweeplab"]
    job_id = add_job(svc.sessions)
    with svc.read_sessions() as reader:
        assert reader.get(Job, job_id).name == "xor-tiny"  # its snapshot is taken
        assert timed_write(svc.sessions, job_id, "renamed") < WRITE_WITHIN
        # the reader still sees its snapshot, and ends without a lock to give back
        assert reader.scalar(select(Job.name).where(Job.id == job_id)) == "xor-tiny"
    # the same session factory opened as a read by hand
    with svc.sessions() as reader:
        begin_read(reader).scalar(select(func.count()).select_from(Job))
        assert timed_write(svc.sessions, job_id, "again") < WRITE_WITHIN


def test_a_writer_held_open_does_block_a_writer(app, settings):
    """What the checks here would catch: a transaction that took the write lock."""
    svc = app.extensions["sweeplab"]
    job_id = add_job(svc.sessions)
    path = settings.database_url.removeprefix("sqlite:///")
    with svc.sessions() as holder:
        holder.get(Job, job_id)  # BEGIN IMMEDIATE: the write lock, until it ends
        other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


def test_a_read_session_refuses_to_write(app):
    svc = app.extensions["sweeplab"]
    job_id = add_job(svc.sessions)
    with svc.read_sessions() as reader:
        reader.get(Job, job_id).name = "changed"
        with pytest.raises(ReadOnlySessionError):
            reader.flush()


def test_writes_never_fail_because_of_readers(app):
    """Readers holding snapshots over several writers' read-modify-write transactions."""
    svc = app.extensions["sweeplab"]
    job_id = add_job(svc.sessions)
    stop, errors = threading.Event(), []

    def read_forever() -> None:
        try:
            while not stop.is_set():
                with svc.read_sessions() as reader:
                    reader.scalar(select(Job.attempts).where(Job.id == job_id))
                    time.sleep(0.01)  # the snapshot held across the writers' commits
                    reader.scalar(select(func.count()).select_from(Job))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def increment(n: int) -> None:
        try:
            for _ in range(n):
                with svc.sessions() as session:
                    job = session.get(Job, job_id)
                    job.attempts += 1
                    session.commit()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    readers = [threading.Thread(target=read_forever) for _ in range(4)]
    writers = [threading.Thread(target=increment, args=(50,)) for _ in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in readers:
        t.join(10)
    assert errors == []
    with svc.sessions() as session:
        assert session.get(Job, job_id).attempts == 150


def test_an_api_read_in_progress_does_not_block_a_writer(app, client):
    svc = app.extensions["sweeplab"]
    job_id = add_job(svc.sessions)
    client.get(f"{API}/jobs")  # the token's use is recorded now, not during the test
    inside, release = threading.Event(), threading.Event()
    reader = threading.get_ident

    def pause(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == request_thread[0] and "FROM jobs" in statement:
            inside.set()
            release.wait(10)

    request_thread: list[int | None] = [None]
    answers: list[Any] = []

    def get() -> None:
        request_thread[0] = reader()
        answers.append(client.get(f"{API}/jobs/{job_id}"))

    event.listen(svc.engine, "after_cursor_execute", pause)
    try:
        thread = threading.Thread(target=get)
        thread.start()
        assert inside.wait(10)  # the GET is reading, its transaction open
        assert timed_write(svc.sessions, job_id, "renamed") < WRITE_WITHIN
        release.set()
        thread.join(10)
    finally:
        event.remove(svc.engine, "after_cursor_execute", pause)
    assert answers[0].status_code == 200


def test_a_read_request_writes_only_a_due_token_use(app, client, admin_token):
    svc = app.extensions["sweeplab"]
    opened: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN"):
            opened.append(statement)

    token_id = admin_token.split("_")[1]
    with svc.sessions() as session:
        session.execute(update(ApiToken).values(last_used_at=None))
        session.commit()
    event.listen(svc.engine, "before_cursor_execute", record)
    try:
        client.get(f"{API}/jobs")  # first use: recorded, in a transaction of its own
        assert opened.count("BEGIN IMMEDIATE") == 1
        opened.clear()
        client.get(f"{API}/jobs")
        client.get(f"{API}/sweeps")
        assert opened and set(opened) == {"BEGIN"}  # reads only
        opened.clear()
        with svc.sessions() as session:  # a minute later, the next read records it again
            before = utcnow() - LAST_USED_RESOLUTION
            session.execute(update(ApiToken).values(last_used_at=before))
            session.commit()
        RECENT.clear()  # (a minute later, this process's 5 s memory of the token is gone)
        opened.clear()
        client.get(f"{API}/jobs")
        assert opened.count("BEGIN IMMEDIATE") == 1
        opened.clear()
        client.post(f"{API}/jobs", json=dict(XOR_JOB))  # a write request stays one
        assert "BEGIN IMMEDIATE" in opened
    finally:
        event.remove(svc.engine, "before_cursor_execute", record)
    with svc.read_sessions() as session:
        used = session.scalar(select(ApiToken.last_used_at).where(ApiToken.id == token_id))
        assert used is not None and utcnow() - used < LAST_USED_RESOLUTION
