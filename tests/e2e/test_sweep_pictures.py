"""A real sweep's pictures: in MLflow (real worker processes, a real MLflow server) and in
a real browser.

A learning-rate sweep trains to its end on a Stack whose mirror is on. Its
parent run then holds ``lr_map.png``, ``lr_map.json`` (the same data as
``GET /sweeps/<id>/lr-map.json``) and ``report.html``; every trial's run holds
``learning_curve.png`` and ``layers.png``. The report, from the API and from
MLflow, opens in headless Chromium with every request but its own file refused:
its images load (``naturalWidth > 0``) and its leaderboard has every trial.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.mlflow_support import MlflowServer, mirroring_stack, tags, wait_mirrored
from tests.e2e.test_mlflow_ui import SHOTS, browser  # noqa: F401  (a shared fixture)
from tests.integration.harness import Stack
from tests.reports_support import lr_sweep_body

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_TRIALS = 8


@pytest.fixture(scope="module")
def mirrored_sweep(
    redis_base: str, mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, dict]]:
    stack = mirroring_stack("sqlite", tmp_path_factory.mktemp("pictures"), redis_base, mlflow.url)
    try:
        stack.start_worker(concurrency=2)
        body = lr_sweep_body(
            name=f"pictures-{uuid.uuid4().hex[:6]}", experiment=f"e2e-{uuid.uuid4().hex[:8]}"
        )
        body["max_concurrency"] = 2
        sweep = stack.post("/sweeps", body)
        stack.wait_sweep(sweep["id"])
        wait_mirrored(stack, sweep["id"])
        yield stack, stack.get(f"/sweeps/{sweep['id']}")
    finally:
        stack.close()


def test_the_parent_run_and_every_trials_run_hold_the_pictures(mirrored_sweep, mlflow):
    stack, sweep = mirrored_sweep
    runs = mlflow.runs(sweep["mlflow"]["experiment_id"])
    parent = next(r for r in runs if tags(r).get("sweeplab.kind") == "sweep")
    parent_id = parent["info"]["run_id"]
    assert {"lr_map.png", "lr_map.json", "report.html", "sweep.json"} <= set(
        mlflow.artifacts(parent_id)
    )
    assert mlflow.artifact_bytes(parent_id, "lr_map.png")[:8] == PNG_MAGIC
    mirrored = json.loads(mlflow.artifact_bytes(parent_id, "lr_map.json"))
    assert mirrored == stack.get(f"/sweeps/{sweep['id']}/lr-map.json")  # the same data
    assert len(mirrored["points"]) == N_TRIALS and mirrored["ceilings"]
    report = mlflow.artifact_bytes(parent_id, "report.html").decode()
    assert sweep["name"] in report and report.count('<tr class="trial">') == N_TRIALS
    trials = [r for r in runs if tags(r).get("sweeplab.kind") == "job"]
    assert len(trials) == N_TRIALS
    for run in trials:
        run_id = run["info"]["run_id"]
        assert {"learning_curve.png", "layers.png"} <= set(mlflow.artifacts(run_id))
        for name in ("learning_curve.png", "layers.png"):
            assert mlflow.artifact_bytes(run_id, name)[:8] == PNG_MAGIC


def _open_report(browser, path: Path, shot: str) -> dict:  # noqa: F811
    """Open the page from disk, refusing every other request; what the page shows."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    asked: list[str] = []

    def refuse(route):
        asked.append(route.request.url)
        route.abort()

    page.route(lambda url: not url.startswith("file:"), refuse)
    try:
        page.goto(path.as_uri())
        page.wait_for_function(
            "[...document.images].length === 3 && [...document.images].every(i => i.complete)"
        )
        seen = page.evaluate(
            """() => ({
                images: [...document.images].map(i => [i.id, i.naturalWidth, i.naturalHeight]),
                rows: document.querySelectorAll("table.leaderboard tr.trial").length,
                title: document.querySelector("h1").textContent,
            })"""
        )
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / shot), full_page=True)
    finally:
        context.close()
    return {**seen, "asked": asked}


def test_the_report_opens_in_a_browser_with_its_images(browser, mirrored_sweep, mlflow, tmp_path):  # noqa: F811
    stack, sweep = mirrored_sweep
    from_api = stack.client.get(f"/api/v1/sweeps/{sweep['id']}/report")
    assert from_api.status_code == 200 and from_api.mimetype == "text/html"
    pages = {"api": from_api.get_data(as_text=True)}
    parent_id = sweep["mlflow"]["run_id"]
    pages["mlflow"] = mlflow.artifact_bytes(parent_id, "report.html").decode()
    for source, html in pages.items():
        path = tmp_path / f"report-{source}.html"
        path.write_text(html, encoding="utf-8")
        seen = _open_report(browser, path, f"sweep_report_{source}.png")
        assert seen["asked"] == [], seen["asked"]  # nothing fetched from anywhere
        assert seen["title"] == sweep["name"]
        assert seen["rows"] == N_TRIALS
        assert {name for name, _, _ in seen["images"]} == {"lr-map-img", "curves-img", "layers-img"}
        assert all(width > 0 and height > 0 for _, width, height in seen["images"]), seen
