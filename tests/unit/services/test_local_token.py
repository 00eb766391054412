"""The local admin token of `make up`: created once, readable by its owner only, reused
while the database knows it, replaced when it was revoked."""

from __future__ import annotations

import stat

from services.auth import LOCAL, authenticate, list_tokens, revoke_token
from services.db import make_engine, make_session_factory, upgrade
from services.stack import tokens


def test_up_keeps_one_private_admin_token(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_HOME", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'var' / 'sweeplab.db'}"
    (tmp_path / "var").mkdir()
    upgrade(url)
    env = {"DATABASE_URL": url}
    first = tokens.ensure_local_token(env)
    path = tokens.token_file()
    assert path == tmp_path / "var" / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first == tokens.read_local_token()
    assert tokens.ensure_local_token(env) == first  # a second `make up` reuses it
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            who = authenticate(session, first)
            assert who is not None and who.name == "admin" and who.is_admin
            (row,) = list_tokens(session, LOCAL)
            revoke_token(session, row.id, LOCAL)
            session.commit()
        second = tokens.ensure_local_token(env)  # revoked: a new one replaces it
        assert second != first and tokens.read_local_token() == second
        with sessions() as session:
            assert authenticate(session, first) is None
            assert authenticate(session, second) is not None
    finally:
        engine.dispose()
