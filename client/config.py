"""Where the server is and which token to send: flags, then the environment, then the
local stack's files (what ``make up`` writes), in that order."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: What ``make up`` uses (services/stack/commands.py: API_HOST, SWEEPLAB_API_PORT or 8000).
LOCAL_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Where ``make up`` keeps the local admin token ($SWEEPLAB_HOME/var, else ./var).
TOKEN_FILE = Path("var") / "admin.token"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None
    url_from: str  # "--url", "SWEEPLAB_URL" or "local stack"
    token_from: str | None  # "--token", "SWEEPLAB_TOKEN", the token file's path, or None


def local_url(env: Mapping[str, str]) -> str:
    port = env.get("SWEEPLAB_API_PORT") or DEFAULT_PORT
    return f"http://{LOCAL_HOST}:{port}"


def token_files(env: Mapping[str, str], cwd: Path) -> list[Path]:
    """Where a local admin token may be: ``$SWEEPLAB_HOME/var/admin.token`` if set, else
    ``var/admin.token`` in the working directory or the nearest parent that has one."""
    home = env.get("SWEEPLAB_HOME")
    if home:
        return [Path(home) / TOKEN_FILE]
    return [d / TOKEN_FILE for d in (cwd, *cwd.parents)]


def is_loopback(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "") in LOOPBACK


def resolve(
    url: str | None = None,
    token: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Target:
    """The server and token to use.

    The local token file is read only for a server on this machine: the local admin
    token is never sent to another host."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    if url:
        url_from = "--url"
    elif env.get("SWEEPLAB_URL"):
        url, url_from = env["SWEEPLAB_URL"], "SWEEPLAB_URL"
    else:
        url, url_from = local_url(env), "local stack"
    token_from: str | None
    if token:
        token_from = "--token"
    elif env.get("SWEEPLAB_TOKEN"):
        token, token_from = env["SWEEPLAB_TOKEN"], "SWEEPLAB_TOKEN"
    else:
        token, token_from = None, None
        if is_loopback(url):
            for path in token_files(env, cwd):
                found = _read(path)
                if found:
                    token, token_from = found, str(path)
                    break
    return Target(url=url.rstrip("/"), token=token, url_from=url_from, token_from=token_from)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
