"""The files the mirror puts on a sweep's parent run at its final pass
(``services.mirror.sweep_artifacts``)."""

from __future__ import annotations

import json
import logging
import sqlite3

from services.mirror import sweep_artifacts
from services.mirror.sweep_artifacts import sweep_files
from tests.reports_support import API, finished_sweep, lr_sweep_body


def test_the_parent_run_gets_the_lr_map_and_the_report(client, app, dispatcher, settings):
    sweep = finished_sweep(client, app, dispatcher, lr_sweep_body(name="mirrored"))
    files = sweep_files(settings, sweep["id"])
    assert set(files) == {"lr_map.png", "lr_map.json", "report.html"}
    assert files["lr_map.png"][:8] == b"\x89PNG\r\n\x1a\n"
    api = client.get(f"{API}/sweeps/{sweep['id']}/lr-map.json").get_json()
    assert json.loads(files["lr_map.json"]) == api  # the same data as the route's
    assert b"<h1>mirrored</h1>" in files["report.html"]
    assert sweep_files(settings, "0" * 32) == {}


def test_a_sweep_without_a_learning_rate_gets_the_report_only(client, app, dispatcher, settings):
    body = lr_sweep_body(parameters={"hyperparameters.batch_size": {"values": [16, 32]}})
    sweep = finished_sweep(client, app, dispatcher, body)
    assert set(sweep_files(settings, sweep["id"])) == {"report.html"}


def test_a_drawing_that_fails_is_logged_and_left_out(
    client, app, dispatcher, settings, monkeypatch, caplog
):
    sweep = finished_sweep(client, app, dispatcher, lr_sweep_body())

    def broken(*args, **kwargs):
        raise ValueError("a bug in the drawing")

    monkeypatch.setattr(sweep_artifacts, "lr_map_png", broken)
    with caplog.at_level(logging.ERROR, logger=sweep_artifacts.__name__):
        files = sweep_files(settings, sweep["id"])
    assert set(files) == {"report.html"}  # the parent run still closes, with what it has
    assert "cannot draw the LR map" in caplog.text


def test_drawing_never_waits_for_the_write_lock(client, app, dispatcher, settings):
    """On SQLite the files are read in a deferred transaction: a worker writing its epochs
    meanwhile (here: a connection holding the write lock) neither waits nor is waited for."""
    sweep = finished_sweep(client, app, dispatcher, lr_sweep_body())
    writer = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), timeout=0.1)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE sweeps SET name = 'renamed' WHERE id = ?", (sweep["id"],))
        files = sweep_files(settings, sweep["id"])
    finally:
        writer.rollback()
        writer.close()
    assert set(files) == {"lr_map.png", "lr_map.json", "report.html"}
