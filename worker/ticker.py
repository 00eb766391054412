"""Periodic sends from a worker's main process (recover passes, the MLflow catch-up)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery import signals

from services.config import Settings

log = logging.getLogger(__name__)


class Ticker:
    """Call ``send`` every ``period`` seconds from a thread of the worker's main process.

    A thread rather than a task that schedules its own successor: a countdown
    message lives in Redis, and if Redis loses its data (a restart without
    persistence) or is away when the successor is sent, the chain is gone and
    nothing would ever run again. A Redis key taken with SET NX (``guard``)
    keeps it to one send per period however many workers tick; the first send,
    at start, skips it (this worker may replace a dead one).
    """

    def __init__(
        self, settings: Settings, name: str, send: Callable[[], None], period: float, guard: str
    ):
        self.settings, self.name, self.send = settings, name, send
        self.period, self.guard = period, f"{guard}:{settings.celery_queue}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"sweeplab-{name}", daemon=True)

    def _loop(self) -> None:
        client = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        first = True
        while True:
            try:
                px = max(1, int(self.period * 1000) - 100)
                if first or client.set(self.guard, 1, nx=True, px=px):
                    self.send()
                first = False
            except Exception as err:  # Redis is away: try again next period
                log.warning("could not schedule %s: %s", self.name, err)
            if self.stop.wait(self.period):
                client.close()
                return


_tickers: list[Ticker] = []


def start_ticker(ticker: Ticker) -> None:
    """Start ``ticker``; it stops when the worker shuts down."""
    _tickers.append(ticker)
    ticker.thread.start()


@signals.worker_shutting_down.connect
def _on_shutdown(**_kwargs: Any) -> None:
    for ticker in _tickers:
        ticker.stop.set()
