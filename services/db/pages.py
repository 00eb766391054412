"""Keyset pagination, newest first, on (created_at, id): the cursors the API hands out.

A cursor names the table it pages (a cursor of the jobs is refused by the sweeps'
list), and a leaderboard's names its sweep (``services.ranking``): one from
elsewhere is a 400, never a page that starts at some unrelated place."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.orm import Session


class BadCursorError(ValueError):
    pass


def encode_cursor(created_at: datetime, row_id: str, table: str) -> str:
    raw = json.dumps([table, created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, table: str) -> tuple[datetime, str]:
    """The position in ``table`` of a cursor made by :func:`encode_cursor` for that table;
    BadCursorError otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        of, stamp, row_id = json.loads(raw)
        if of != table or not isinstance(stamp, str) or not isinstance(row_id, str):
            raise TypeError("a cursor holds its table, a timestamp and an id")
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, TypeError) as err:
        raise BadCursorError("cursor is not one this API handed out") from err
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    return created_at, row_id


def encode_key(values: list[Any]) -> str:
    """An opaque cursor holding a page's last sort key (JSON values)."""
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_key(cursor: str, n: int) -> list[Any]:
    """The ``n`` values of a cursor made by :func:`encode_key`; BadCursorError otherwise."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as err:
        raise BadCursorError("cursor is not one this API handed out") from err
    if not isinstance(values, list) or len(values) != n:
        raise BadCursorError("cursor is not one this API handed out")
    return values


def paginate(session: Session, model: Any, stmt: Any, *, cursor: str | None, limit: int):
    """Newest first, keyset pagination on (created_at, id); returns (rows, next_cursor)."""
    table = model.__tablename__
    if cursor:
        stamp, row_id = decode_cursor(cursor, table)
        stmt = stmt.where(
            or_(model.created_at < stamp, and_(model.created_at == stamp, model.id < row_id))
        )
    stmt = stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    if not (more and rows):
        return rows, None
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id, table)
