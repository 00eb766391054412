"""The MLflow UI in a real browser: the compare link the API gives shows every trial.

Playwright drives Debian's Chromium headless (``apt-get install chromium``; no
``playwright install``). Pages are awaited by their text, never by network
idleness: the MLflow UI keeps polling. Screenshots land in ``var/e2e/``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.mlflow_support import MlflowServer, mirroring_stack, wait_mirrored
from tests.integration.harness import Stack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "var" / "e2e"
CHROMIUM = os.environ.get("SWEEPLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium; skipped where it is missing, unless SWEEPLAB_REQUIRE_BROWSER is set
    (as `.ci/run` sets it): then a missing browser or Playwright fails the test."""
    required = bool(os.environ.get("SWEEPLAB_REQUIRE_BROWSER"))
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            pytest.fail(
                "the browser test is required (SWEEPLAB_REQUIRE_BROWSER) but Playwright "
                "is not installed"
            )
        pytest.skip("Playwright is not installed")
    if not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if required:
            pytest.fail(f"the browser test is required (SWEEPLAB_REQUIRE_BROWSER): {why}")
        pytest.skip(why)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def finished_sweep(
    redis_base: str, mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, dict]]:
    stack = mirroring_stack("sqlite", tmp_path_factory.mktemp("ui"), redis_base, mlflow.url)
    try:
        stack.start_worker(concurrency=2)
        name = f"ui-sweep-{uuid.uuid4().hex[:6]}"
        sweep = stack.post(
            "/sweeps",
            {
                "name": name,
                "experiment": f"e2e-{uuid.uuid4().hex[:8]}",
                "base": {
                    "dataset": {"name": "digits", "seed": 0},
                    "architecture": {"layers": [{"units": 16, "activation": "relu"}]},
                    "hyperparameters": {"learning_rate": 0.1, "batch_size": 32, "epochs": 5},
                },
                "method": "grid",
                "parameters": {"hyperparameters.learning_rate": {"values": [0.003, 0.03, 0.3]}},
                "objective": {"metric": "val_loss", "goal": "minimize"},
                "max_concurrency": 2,
            },
        )
        stack.wait_sweep(sweep["id"])
        wait_mirrored(stack, sweep["id"])
        yield stack, stack.get(f"/sweeps/{sweep['id']}")
    finally:
        stack.close()


def _page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    return context, page


def test_compare_link_shows_every_trial(browser, finished_sweep):
    stack, sweep = finished_sweep
    trials = stack.get(f"/sweeps/{sweep['id']}/trials")
    run_names = sorted(
        f"lr={t['params']['hyperparameters.learning_rate']:.4g} bs=32"
        for t in trials.get("trials", trials.get("items", []))
    )
    assert len(run_names) == 3, trials
    context, page = _page(browser)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.goto(sweep["mlflow"]["compare_url"])
        for name in run_names:
            page.get_by_text(name, exact=True).first.wait_for(state="visible")
        page.get_by_text("Parameters").first.wait_for()  # the comparison table is drawn
        page.screenshot(path=str(SHOTS / "compare_runs.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(SHOTS / "compare_runs_failed.png"), full_page=True)
        raise
    finally:
        context.close()


def test_experiment_runs_view_shows_the_parent_run(browser, finished_sweep):
    _, sweep = finished_sweep
    context, page = _page(browser)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.goto(sweep["mlflow"]["experiment_url"])
        page.get_by_text(sweep["name"], exact=True).first.wait_for(state="visible")
        # The link opens the "Model training" side of the UI, with its model registry.
        page.get_by_text("Model registry", exact=True).first.wait_for(state="visible")
        page.screenshot(path=str(SHOTS / "experiment_runs.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(SHOTS / "experiment_runs_failed.png"), full_page=True)
        raise
    finally:
        context.close()
