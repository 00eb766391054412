"""The mirror locks in a real Redis: held by a live process or another host, a lock
is busy; left by a process of this host that died, it is taken over at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import redis

from services.mirror.plumbing import LOCK_SECONDS, MirrorBusy, mirror_lock
from tests.integration.harness import claim_redis_db

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(redis_base: str) -> Iterator[SimpleNamespace]:
    url, release = claim_redis_db(redis_base)
    try:
        yield SimpleNamespace(redis_url=url)
    finally:
        with redis.Redis.from_url(url) as r:
            r.flushdb()
        release()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _hold(settings, name: str, holder: str) -> None:
    """As if ``holder`` (host:pid) held the lock ``name``."""
    with redis.Redis.from_url(settings.redis_url) as r:
        r.set(f"sweeplab:mirror:{name}", f"{holder}/0123abcd", px=LOCK_SECONDS * 1000)


@pytest.mark.parametrize("holder", ["alive here", "elsewhere"])
def test_a_lock_of_a_live_or_remote_holder_is_busy(settings, holder):
    host = socket.gethostname() if holder == "alive here" else "another-host"
    pid = os.getpid() if holder == "alive here" else _dead_pid()
    _hold(settings, "job:a", f"{host}:{pid}")
    with pytest.raises(MirrorBusy), mirror_lock(settings, "job:a"):
        pass


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over(settings):
    _hold(settings, "job:b", f"{socket.gethostname()}:{_dead_pid()}")
    with redis.Redis.from_url(settings.redis_url) as r:
        with mirror_lock(settings, "job:b"):
            token = r.get("sweeplab:mirror:job:b")
            assert token is not None
            assert token.decode().startswith(f"{socket.gethostname()}:{os.getpid()}/")
            with pytest.raises(MirrorBusy), mirror_lock(settings, "job:b"):  # held: busy
                pass
        assert r.get("sweeplab:mirror:job:b") is None  # released on the way out
