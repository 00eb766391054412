"""``Idempotency-Key`` on POST: the same key (per user and resource kind) with the same
body names the resource it created first; with another body it is refused.

A key is stored in the transaction that creates its resource (``idempotency_keys``,
unique on owner, scope and key). Two requests racing with one key both may get as
far as creating their resource, but only one commits: the other's INSERT of the key
fails on the unique constraint (PostgreSQL makes it wait for the first to commit;
SQLite's write lock serializes them before that), its transaction rolls back with
everything it created, and it answers the resource the key names. A key expires
after ``Settings.idempotency_seconds`` (24 h by default); then it may name another.

The body is compared by the SHA-256 of its canonical JSON (keys sorted), so the same
object sent with its keys in another order is the same request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.db.models import IdempotencyKey, utcnow

#: a key is 1..255 printable ASCII characters (a UUID is the usual choice)
MAX_KEY_LENGTH = 255


class KeyReused(Exception):
    """The key was sent before with another body (a 422: ``idempotency_key_reused``)."""

    def __init__(self, key: str, resource_id: str):
        super().__init__(
            f"the Idempotency-Key {key!r} was used with another body (it names "
            f"{resource_id}); send a new key for a new request"
        )
        self.resource_id = resource_id


class KeyTaken(Exception):
    """A request racing with this one committed the key first: answer its resource."""


@dataclass(frozen=True)
class Claim:
    """An ``Idempotency-Key`` of one request: who sent it, for which kind of resource,
    with which body."""

    owner: str
    scope: str
    key: str
    request_sha256: str
    ttl_seconds: float


def request_sha256(body: Any) -> str:
    """The SHA-256 of ``body``'s canonical JSON."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an idempotency key (None: it can)."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return f"an Idempotency-Key has 1 to {MAX_KEY_LENGTH} characters"
    if not all(32 < ord(c) < 127 for c in key):
        return "an Idempotency-Key is printable ASCII without spaces"
    return None


def make_claim(
    key: str, *, owner_id: str | None, scope: str, body: Any, ttl_seconds: float
) -> Claim:
    return Claim(owner_id or "", scope, key, request_sha256(body), ttl_seconds)


def lookup(session: Session, claim: Claim) -> str | None:
    """The id of the resource the key names, if it names one and has not expired;
    raises :class:`KeyReused` if it was sent with another body. An expired key is
    deleted (flushed)."""
    row = session.scalars(
        select(IdempotencyKey).where(
            IdempotencyKey.owner == claim.owner,
            IdempotencyKey.scope == claim.scope,
            IdempotencyKey.key == claim.key,
        )
    ).one_or_none()
    if row is None:
        return None
    if row.expires_at <= utcnow():
        forget(session, claim)
        return None
    if row.request_sha256 != claim.request_sha256:
        raise KeyReused(claim.key, row.resource_id)
    return row.resource_id


def forget(session: Session, claim: Claim) -> None:
    """Delete the key (it expired, or its resource is gone); flushes."""
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.owner == claim.owner,
            IdempotencyKey.scope == claim.scope,
            IdempotencyKey.key == claim.key,
        )
    )


def remember(session: Session, claim: Claim, *, resource_id: str, status_code: int = 201) -> None:
    """Store the key with the resource it created, in the caller's transaction;
    raises :class:`KeyTaken` (the caller's transaction rolled back) if a racing
    request stored it first. Expired keys of anyone are cleared on the way."""
    now = utcnow()
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
    session.add(
        IdempotencyKey(
            owner=claim.owner,
            scope=claim.scope,
            key=claim.key,
            request_sha256=claim.request_sha256,
            resource_id=resource_id,
            status_code=status_code,
            created_at=now,
            expires_at=now + timedelta(seconds=claim.ttl_seconds),
        )
    )
    try:
        session.flush()
    except IntegrityError as err:
        session.rollback()
        raise KeyTaken(claim.key) from err
