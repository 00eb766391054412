"""The local admin token of ``make up`` / ``make demo``, and the ``token`` commands.

On first start, ``up`` creates a user ``admin`` and a token for it, and keeps
the token in ``var/admin.token``, readable by its owner only (0600). Every
local tool (the demo, the scripts, the CLI) reads it from there, so that a
newcomer needs no step of their own. ``python -m services.stack token ...``
creates, lists and revokes tokens directly in the database, as the operator.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.auth import LOCAL, LOCAL_ADMIN, authenticate, issue_token, list_tokens, revoke_token
from services.auth import token_public as public
from services.config import Settings
from services.db import make_engine, make_session_factory
from services.stack.processes import var_dir

TOKEN_FILE_NAME = "admin.token"


def token_file() -> Path:
    return var_dir() / TOKEN_FILE_NAME


def read_local_token() -> str | None:
    """The local admin token, if ``up`` made one (None otherwise)."""
    path = token_file()
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    os.chmod(tmp, 0o600)  # whatever the umask
    os.replace(tmp, path)


def ensure_local_token(env: dict[str, str]) -> str:
    """The token in ``var/admin.token`` if the database knows it, else a new admin token
    written there (0600). The database must be migrated."""
    engine = make_engine(Settings.from_env(env).database_url)
    try:
        with make_session_factory(engine)() as session:
            token = read_local_token()
            if token is not None and authenticate(session, token) is not None:
                session.commit()
                return token
            _, token = issue_token(session, user=LOCAL_ADMIN, admin=True, name="local (var/)")
            session.commit()
    finally:
        engine.dispose()
    _write_private(token_file(), token)
    return token


def create(env: dict[str, str], *, user: str, admin: bool, name: str | None) -> str:
    engine = make_engine(Settings.from_env(env).database_url)
    try:
        with make_session_factory(engine)() as session:
            _, token = issue_token(session, user=user, admin=admin, name=name)
            session.commit()
    finally:
        engine.dispose()
    return token


def listing(env: dict[str, str]) -> list[dict]:
    engine = make_engine(Settings.from_env(env).database_url)
    try:
        with make_session_factory(engine)() as session:
            return [public(session, row) for row in list_tokens(session, LOCAL)]
    finally:
        engine.dispose()


def revoke(env: dict[str, str], token_id: str) -> dict:
    engine = make_engine(Settings.from_env(env).database_url)
    try:
        with make_session_factory(engine)() as session:
            row = revoke_token(session, token_id, LOCAL)
            shown = public(session, row)
            session.commit()
            return shown
    finally:
        engine.dispose()
