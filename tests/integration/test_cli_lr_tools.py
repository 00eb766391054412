"""The learning-rate tools through the CLI against a real stack (gunicorn, a Celery worker,
SQLite, Redis): `sweeplab lr-find` runs a range test in a worker and prints its reading; a
watched sweep shows each trial's learning-rate findings, the rates it skipped and its
divergence ceiling."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.cli_support import Server, digits_job, lr_sweep, serve

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_base: str) -> Iterator[Server]:
    yield from serve(tmp_path_factory, redis_base)


def test_lr_find_runs_a_range_test_and_prints_its_reading(server: Server):
    spec = server.workdir / "job.json"
    spec.write_text(json.dumps(digits_job(epochs=3)))
    png = server.workdir / "lr.png"
    shown = server.cli("lr-find", str(spec), "--steps", "80", "--png", str(png))
    assert shown.returncode == 0, (shown.stdout[-2000:], shown.stderr[-2000:])
    assert "suggested learning rate" in shown.stdout and "diverge" in shown.stdout
    assert png.read_bytes()[:8] == PNG_MAGIC
    as_json = server.cli("lr-find", str(spec), "--steps", "80", "--json")
    test = json.loads(as_json.stdout)  # the API's JSON alone on stdout
    assert test["status"] == "succeeded" and len(test["curve"]) == test["steps_taken"]
    assert 1e-6 <= test["suggested_lr"] <= 10.0
    bad = server.cli("lr-find", str(spec), "--min-lr", "5", "--max-lr", "1")
    assert bad.returncode == 2 and "min_lr" in bad.stderr


def test_a_watched_sweep_shows_findings_skips_and_its_ceiling(server: Server):
    base = digits_job(epochs=12, optimizer="sgd")
    sweep = lr_sweep([1e-4, 0.1, 3.0, 8.0, 16.0], base, max_concurrency=1)
    spec = server.workdir / "sweep.json"
    spec.write_text(json.dumps(sweep))
    shown = server.cli("submit", str(spec), "--wait")
    text = shown.stdout
    assert shown.returncode == 0, (text[-3000:], shown.stderr[-2000:])
    assert "lr_too_low" in text  # 1e-4 barely moves in 12 epochs
    assert "diverged" in text and "skipped" in text
    assert "divergence ceiling: hyperparameters.learning_rate >= 3" in text
