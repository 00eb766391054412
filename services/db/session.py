"""Engines and session factories: one per process, created after a fork.

On SQLite a transaction opens in one of two modes. Writes (the default, for
workers, the scheduler and every request that changes something) open with
``BEGIN IMMEDIATE``: they take the write lock up front and wait for it.
Reads open with a plain ``BEGIN``, deferred: under WAL a reader sees a
snapshot and never blocks a writer, nor waits for one. A read session
refuses to write (its transaction would have to take the lock halfway,
which fails at once when another writer committed since its snapshot).
PostgreSQL needs no such care; the modes change nothing there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The connection execution option that opens a transaction deferred (a read).
READ = "sweeplab_read"


class ReadOnlySessionError(RuntimeError):
    """A read session was asked to write (use a write session for that)."""


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE for writes.

    SQLite allows one writer. A deferred transaction that reads and then
    writes can fail at once with "database is locked" when another process
    wrote in between (the busy timeout cannot help there), so a transaction
    that may write takes the write lock up front and waits for it instead; one
    that only reads (the ``READ`` execution option) opens deferred.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read = connection.get_execution_options().get(READ)
        connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: Engine, *, read: bool = False) -> sessionmaker[Session]:
    """Sessions whose transactions write (the default), or only read (``read``)."""
    if not read:
        return sessionmaker(bind=engine, expire_on_commit=False)
    factory = sessionmaker(bind=engine.execution_options(**{READ: True}), expire_on_commit=False)
    event.listen(factory, "before_flush", _refuse_writes)
    return factory


def begin_read(session: Session) -> Session:
    """Open ``session``'s next transaction as a read (deferred on SQLite); call it
    before the transaction's first statement. The caller must not write in it."""
    session.connection(execution_options={READ: True})
    return session


def _refuse_writes(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
        raise ReadOnlySessionError("a read session does not write: use a write session")
