"""Fixtures for integration tests: real Redis, real databases, real worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.harness import Stack, redis_ok, require_postgres

REDIS_URL = os.environ.get("SWEEPLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server: the local one, or one started for the session."""
    if redis_ok(REDIS_URL):
        yield REDIS_URL
        return
    try:
        from services.stack.processes import start_redis
    except ImportError:
        pytest.skip("no Redis at 127.0.0.1:6379 and no services.stack to start one")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tmp_path_factory.mktemp("redis")
    proc = start_redis(port, tmp, tmp / "redis.log")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def stack(
    request: pytest.FixtureRequest, redis_base: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One database backend with one worker (two processes), shared by the tests."""
    if request.param == "postgresql":
        require_postgres()
    s = Stack(request.param, tmp_path_factory.mktemp(f"stack-{request.param}"), redis_base)
    try:
        s.start_worker(concurrency=2)
        yield s
    finally:
        s.close()
