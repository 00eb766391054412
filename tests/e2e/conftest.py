"""Fixtures for the browser tests: Redis as the integration tests get it."""

from tests.integration.conftest import redis_base  # noqa: F401  (a shared fixture)
