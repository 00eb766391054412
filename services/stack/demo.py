"""The demo: bring the stack up, run a sweep to the end, print its progress and leaderboard."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from services.stack.commands import API_HOST, API_PORT, service_env, up
from services.stack.processes import StackError
from services.stack.tokens import read_local_token


def _api(method: str, path: str, body: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    token = read_local_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://{API_HOST}:{API_PORT}/api/v1{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise StackError(f"{method} {path}: {exc.code} {exc.read().decode()[:2000]}") from exc


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_leaderboard(sweep: dict) -> None:
    """Print the top of a sweep's leaderboard as a table."""
    rows = sweep.get("leaderboard") or []
    listed = sum((sweep.get("counts") or {}).values())
    objective = sweep.get("objective") or {}
    goal = f"{objective.get('metric')}, {objective.get('goal')}"
    print(f"\nleaderboard of sweep {sweep['id']} ({goal})")
    print(f"{'rank':>4}  {'status':<10} {'objective':>10} {'best_ep':>7}  params")
    for row in rows:
        rank = row.get("rank") or "-"
        params = " ".join(
            f"{key.split('.')[-1]}={_fmt(val)}" for key, val in (row.get("params") or {}).items()
        )
        print(
            f"{rank:>4}  {row.get('status', '-'):<10} {_fmt(row.get('objective')):>10} "
            f"{_fmt(row.get('best_epoch')):>7}  {params}"
        )
    if listed > len(rows):
        print(
            f"  ... {listed - len(rows)} more: GET {(sweep.get('links') or {}).get('leaderboard')}"
        )


def _wait_mirrored(sweep_id: str, sweep: dict, timeout: float = 60.0) -> dict:
    """Wait until every trial is mirrored to MLflow; return the sweep's MLflow links
    (``mirrored`` false, and no URLs, while the sweep has no MLflow run yet)."""
    deadline = time.monotonic() + timeout
    links = sweep.get("mlflow") or {}
    while not links.get("mirrored") and time.monotonic() < deadline:
        time.sleep(1.0)
        links = _api("GET", f"/sweeps/{sweep_id}").get("mlflow") or {}
    return links


def _progress_line(sweep: dict, epochs_per_trial: int | None) -> str:
    counts = sweep.get("counts") or {}
    line = "  ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)
    if epochs_per_trial and sweep.get("n_trials"):
        done = sweep.get("epochs_done") or 0
        line += f"  epochs {done}/{sweep['n_trials'] * epochs_per_trial}"
    return line


def demo(spec_path: Path, timeout: float = 3600.0) -> None:
    """Bring the stack up, run the sweep in ``spec_path`` to the end, print results."""
    up()
    spec = json.loads(spec_path.read_text())
    sweep = _api("POST", "/sweeps", spec)
    sweep_id = sweep["id"]
    print(f"\nsubmitted sweep {sweep_id} ({spec.get('name')}): {sweep.get('n_trials')} trials")
    epochs = (spec.get("base", {}).get("hyperparameters") or {}).get("epochs")
    started = changed = time.monotonic()
    last, warned = "", False
    while True:
        sweep = _api("GET", f"/sweeps/{sweep_id}")
        line = _progress_line(sweep, epochs)
        now = time.monotonic()
        if line != last:
            print(f"[{time.strftime('%H:%M:%S')}] {sweep.get('status')}: {line}", flush=True)
            last, changed = line, now
        if sweep.get("status") != "running":
            break
        if now - changed > 120 and not warned:
            print("no progress for 2 minutes: is a worker running? see var/log/worker.log")
            warned = True
        if now - started > timeout:
            raise StackError(f"sweep {sweep_id} did not finish within {timeout:.0f} s")
        time.sleep(1.0)
    print_leaderboard(sweep)
    if not service_env().get("MLFLOW_TRACKING_URI"):
        print("\n(MLflow mirroring is off: MLFLOW_TRACKING_URI is empty)")
        return
    links = _wait_mirrored(sweep_id, sweep)
    if not links.get("mirrored"):
        print(
            "\n(MLflow has not caught up yet; the workers keep mirroring in the background"
            " and retry while MLflow is away: see var/log/worker.log)"
        )
    if links.get("experiment_url"):
        print(f"\nMLflow runs: {links['experiment_url']}")
    if links.get("compare_url"):
        print(f"compare the trials in MLflow: {links['compare_url']}")
