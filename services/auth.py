"""Who is asking: users, their API tokens, and what each may see and do.

A token reads ``swl_<token id>_<secret>``. The database keeps the token's id
and the SHA-256 of its secret, never the secret: a leaked database does not
leak working tokens, and the secret (256 random bits) needs no slow hash. A
presented token is found by its id and its secret compared in constant time
(``hmac.compare_digest``). Revoked tokens stop working at once; every token
records when it was last used, to the minute: :func:`authenticate` only reads,
and :func:`record_use` writes at most once a minute per token, so that reads
do not all write.

Jobs and sweeps belong to the user who submitted them. A user lists, reads,
cancels and deletes only their own; another user's id answers as if it did
not exist (404, not 403). An admin sees and manages everyone's. With
``SWEEPLAB_AUTH=off`` (a lone user on a laptop) every request is a local admin
and rows are created without an owner.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from services.db.models import ACTIVE_STATUSES, ApiToken, Job, User, utcnow

TOKEN_PREFIX = "swl_"
TOKEN_PATTERN = re.compile(r"^swl_([0-9a-f]{32})_([A-Za-z0-9_-]{20,200})$")
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
LAST_USED_RESOLUTION = timedelta(minutes=1)
LOCAL_ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """The user a request acts for (``user_id`` None: auth is off, a local admin)."""

    user_id: str | None
    name: str
    is_admin: bool
    #: the token the request came with, and when its use was last recorded
    token_id: str | None = None
    last_used_at: datetime | None = None

    def sees(self, row: Any) -> bool:
        """May this principal see (and act on) ``row``, a job or a sweep?"""
        return self.is_admin or (self.user_id is not None and row.owner_id == self.user_id)

    @property
    def owner_filter(self) -> str | None:
        """The owner id that lists are restricted to; None for an admin (all rows)."""
        return None if self.is_admin else self.user_id


LOCAL = Principal(user_id=None, name="local", is_admin=True)


class QuotaExceeded(Exception):
    """A submission would take the user over their budget of active jobs."""

    def __init__(self, active: int, asked: int, limit: int, retry_after: int = 30):
        super().__init__(
            f"{active} of your jobs are queued or running and this asks for {asked} more; "
            f"at most {limit} may be at once (SWEEPLAB_MAX_ACTIVE_JOBS): wait for some to end"
        )
        self.retry_after = retry_after


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def valid_user_name(name: str) -> bool:
    return bool(USER_NAME.match(name))


def get_or_create_user(session: Session, name: str, *, admin: bool = False) -> User:
    """The user called ``name``, created if new (``admin`` then decides its role)."""
    if not valid_user_name(name):
        raise ValueError(
            "a user name is 1-100 letters, digits or . _ @ -, starting with a letter or digit"
        )
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        user = User(name=name, is_admin=admin, created_at=utcnow())
        session.add(user)
        session.flush()
    return user


def issue_token(
    session: Session, *, user: str, admin: bool = False, name: str | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user`` (created if new); returns the row and the token text,
    which is shown this once and never stored."""
    owner = get_or_create_user(session, user, admin=admin)
    secret = secrets.token_urlsafe(32)
    row = ApiToken(user_id=owner.id, name=name, secret_sha256=_digest(secret), created_at=utcnow())
    session.add(row)
    session.flush()
    return row, f"{TOKEN_PREFIX}{row.id}_{secret}"


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal a token stands for; None for a malformed, unknown or revoked one.

    Reads only: record the use with :func:`record_use` when ``use_due``."""
    match = TOKEN_PATTERN.match(token)
    # Hash whatever came, so that a malformed token costs what a wrong one does.
    presented = _digest(match.group(2) if match else token)
    row = session.get(ApiToken, match.group(1)) if match else None
    stored = row.secret_sha256 if row is not None else _digest("")
    if not hmac.compare_digest(presented, stored) or row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None:
        return None
    return Principal(
        user_id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        token_id=row.id,
        last_used_at=row.last_used_at,
    )


class RecentTokens:
    """Tokens this process checked against the database in the last ``seconds``, by the
    SHA-256 of the whole token (never the token itself): a request with one of them is
    authenticated without a query. Revoking a token forgets it here at once; another
    API process honours the revocation within ``seconds``."""

    def __init__(self, seconds: float = 5.0, size: int = 1024):
        self.seconds, self.size = seconds, size
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Principal | None:
        key = self._key(token)
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit[1] < time.monotonic():
                self._entries.pop(key, None)
                return None
            return hit[0]

    def put(self, token: str, principal: Principal) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[self._key(token)] = (principal, time.monotonic() + self.seconds)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def forget(self, token_id: str) -> None:
        with self._lock:
            for key in [k for k, (p, _) in self._entries.items() if p.token_id == token_id]:
                del self._entries[key]


#: this process's recently checked tokens (SWEEPLAB_AUTH_CACHE_SECONDS)
RECENT = RecentTokens()


def use_due(principal: Principal, now: datetime | None = None) -> bool:
    """Is the token's last use older than ``LAST_USED_RESOLUTION`` (or never recorded)?"""
    if principal.token_id is None:
        return False
    last = principal.last_used_at
    return last is None or (now or utcnow()) - last >= LAST_USED_RESOLUTION


def record_use(session: Session, token_id: str, now: datetime | None = None) -> bool:
    """Record that the token was used now, unless another request did within the
    resolution (a compare-and-set: concurrent requests write once). Flushes."""
    now = now or utcnow()
    stale = or_(
        ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_RESOLUTION
    )
    result = session.execute(
        update(ApiToken).where(ApiToken.id == token_id, stale).values(last_used_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


def token_public(session: Session, row: ApiToken) -> dict[str, Any]:
    user = session.get(User, row.user_id)
    return {
        "id": row.id,
        "user": user.name if user is not None else None,
        "admin": bool(user.is_admin) if user is not None else False,
        "name": row.name,
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def list_tokens(session: Session, principal: Principal) -> list[ApiToken]:
    """Every token for an admin; a user's own otherwise. Newest first."""
    stmt = select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if not principal.is_admin:
        stmt = stmt.where(ApiToken.user_id == principal.user_id)
    return list(session.scalars(stmt))


def revoke_token(session: Session, token_id: str, principal: Principal) -> ApiToken:
    """Revoke a token (a user their own, an admin any). ``LookupError`` if not visible."""
    row = session.get(ApiToken, token_id)
    if row is None or not (principal.is_admin or row.user_id == principal.user_id):
        raise LookupError(token_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    RECENT.forget(token_id)
    return row


def check_quota(session: Session, principal: Principal, asked: int, limit: int) -> None:
    """Raise :class:`QuotaExceeded` if ``asked`` more active jobs would pass ``limit``."""
    owner = (
        Job.owner_id.is_(None) if principal.user_id is None else Job.owner_id == principal.user_id
    )
    active = session.scalar(
        select(func.count()).select_from(Job).where(owner, Job.status.in_(ACTIVE_STATUSES))
    )
    if int(active or 0) + asked > limit:
        raise QuotaExceeded(int(active or 0), asked, limit)
