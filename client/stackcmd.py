"""`sweeplab up|down|status|demo`: the local stack, run as ``python -m services.stack``
in a subprocess (the client imports no server package), and the demo through the client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from client import outcome
from client.api import JSON, Client
from client.config import local_url, resolve
from client.render import leaderboard_table
from client.shell import emit_json, options, out, say
from client.specfile import load_spec
from client.watch import watch

MIRROR_WAIT_SECONDS = 60.0


def run_stack(*args: str) -> int:
    """``python -m services.stack ARGS`` with this interpreter, in the working directory
    (where the stack keeps ``var/``); its output goes straight to the terminal."""
    return subprocess.call([sys.executable, "-m", "services.stack", *args])


def up(
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 2,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="no MLflow server")] = False,
) -> None:
    """Start the local stack: Redis, MLflow, the API and a worker (what is not running)."""
    args = ["up", "--workers", str(workers)] + (["--no-mlflow"] if no_mlflow else [])
    raise typer.Exit(run_stack(*args))


def down() -> None:
    """Stop what `up` started; running jobs are released and resume at the next `up`."""
    raise typer.Exit(run_stack("down"))


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="the API's /readyz JSON only")] = False,
) -> None:
    """What answers: Redis, the API, MLflow, the worker (exit 3 while the API is down).

    With --json, the readiness of the server the flags or environment name (any server,
    not only the local stack): its /readyz answer."""
    if not as_json:
        raise typer.Exit(outcome.OK if run_stack("status") == 0 else outcome.UNREACHABLE)
    opts = options(ctx)
    where = resolve(opts.url, opts.token)
    with Client(where.url, where.token, timeout=opts.timeout) as api:
        ready = api.readiness()
    emit_json(ready)
    raise typer.Exit(outcome.OK if ready.get("status") == "ready" else outcome.UNREACHABLE)


def demo(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="a sweep spec")] = Path("examples/lr_sweep.json"),
    poll: Annotated[float, typer.Option(min=0.1)] = 1.0,
) -> None:
    """Start the stack, run a sweep to its end live, print its leaderboard and MLflow links."""
    kind, body = load_spec(spec)
    code = run_stack("up")
    if code:
        raise typer.Exit(code)
    where = resolve(local_url(os.environ), options(ctx).token)
    api = Client(where.url, where.token, timeout=options(ctx).timeout)
    created = api.submit(body)
    size = f": {created.get('n_trials')} trials" if kind == "sweep" else ""
    out.print(f"\nsubmitted {kind} {created['id']} ({created.get('name') or '-'}){size}")
    final = watch(api, created["id"], out, poll=poll)
    if kind == "sweep":
        rows = api.leaderboard(created["id"])
        out.print(leaderboard_table(rows, title=f"leaderboard of sweep {created['id']}"))
    _print_mlflow(api, final)
    raise typer.Exit(outcome.outcome_code(final))


def _print_mlflow(api: Client, final: JSON) -> None:
    """The MLflow links once every run is mirrored (a minute at most: the workers go on)."""
    links = final.get("mlflow")
    if links is None:
        say("(MLflow mirroring is off: the server has no MLFLOW_TRACKING_URI)")
        return
    deadline = time.monotonic() + MIRROR_WAIT_SECONDS
    while not links.get("mirrored") and time.monotonic() < deadline:
        time.sleep(1.0)
        links = api.get(final["id"]).get("mlflow") or {}
    if not links.get("mirrored"):
        say(
            "(MLflow has not caught up yet; the workers keep mirroring in the background"
            " and retry while MLflow is away: see var/log/worker.log)"
        )
    if links.get("experiment_url"):
        out.print(f"\nMLflow runs: {links['experiment_url']}", markup=False, soft_wrap=True)
    if links.get("compare_url"):
        out.print(
            f"compare the trials in MLflow: {links['compare_url']}", markup=False, soft_wrap=True
        )
    elif links.get("run_url"):
        out.print(f"the run in MLflow: {links['run_url']}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    for command in (up, down, status, demo):
        app.command()(command)
