"""`sweeplab lr-find SPEC`: Leslie Smith's learning-rate range test of a job spec, run by a
worker (``POST /lr-range-tests``): the curve drawn in the terminal, the suggested rate
and the rate where the loss starts to diverge; ``--png`` saves the server's plot."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from client.api import JSON, Client
from client.chart import draw_chart
from client.errors import BadInput
from client.render import fmt
from client.shell import client, emit_json, out, say
from client.specfile import load_spec

FINISHED = ("succeeded", "failed")


def start(api: Client, spec: JSON, **settings: Any) -> JSON:
    """Send a range test of the job ``spec`` (with an Idempotency-Key): the test (202)."""
    body = {"spec": spec, **{k: v for k, v in settings.items() if v is not None}}
    response = api.request("POST", "/lr-range-tests", json=body, idempotency_key=uuid.uuid4().hex)
    return dict(response.json())


def wait(api: Client, test_id: str, *, poll: float, timeout: float) -> JSON:
    """The test once it has ended (``TimeoutError`` after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        test = dict(api.request("GET", f"/lr-range-tests/{test_id}").json())
        if test.get("status") in FINISHED:
            return test
        if time.monotonic() > deadline:
            raise TimeoutError(f"range test {test_id} still {test.get('status')} after {timeout}s")
        time.sleep(poll)


def summary(test: JSON) -> list[str]:
    """What a person reads of a finished test."""
    if test.get("status") != "succeeded":
        return [f"range test {test['id']} {test.get('status')}: {test.get('error') or '-'}"]
    curve = test.get("curve") or []
    lines = draw_chart(
        {
            "loss": [p.get("loss") for p in curve],
            "smoothed": [p.get("smoothed_loss") for p in curve],
        },
        x=[p.get("step", i) for i, p in enumerate(curve)],
        x_label="step (the rate grows exponentially)",
    )
    lines += [
        f"range test {test['id']}: {test.get('steps_taken')} steps, learning rate "
        f"{fmt(test.get('min_lr'))} to {fmt(test.get('stopped_lr') or test.get('max_lr'))}",
        f"suggested learning rate (steepest descent of the smoothed loss): "
        f"{fmt(test.get('suggested_lr'))}",
        "the loss starts to diverge at: "
        + (fmt(test.get("divergence_lr")) if test.get("divergence_lr") else "(not reached)"),
    ]
    if test.get("interval"):
        low, high = test["interval"]
        lines.append(f"a range of good rates: {fmt(low)} to {fmt(high)}")
    return lines


def lr_find(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a job spec (JSON or YAML), or a sweep's: its base")],
    min_lr: Annotated[float | None, typer.Option(help="the lowest rate (default 1e-6)")] = None,
    max_lr: Annotated[float | None, typer.Option(help="the highest rate (default 10)")] = None,
    steps: Annotated[int | None, typer.Option(help="mini-batches (default 100)")] = None,
    png: Annotated[Path | None, typer.Option(help="save the server's plot of the curve")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON only")] = False,
    poll: Annotated[float, typer.Option(min=0.1, help="seconds between polls")] = 0.5,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the test")] = 600.0,
) -> None:
    """Run an LR range test of a job spec in a worker; print the suggested rate (exit 0) or
    why it failed (exit 1)."""
    kind, spec = load_spec(file)
    if kind == "sweep":
        spec = spec.get("base") or {}
    if not isinstance(spec, dict) or not spec:
        raise BadInput(f"{file}: no job spec to test")
    api = client(ctx)
    test = start(api, spec, min_lr=min_lr, max_lr=max_lr, steps=steps)
    if not as_json:
        say(f"range test {test['id']} queued; waiting for a worker")
    test = wait(api, test["id"], poll=poll, timeout=timeout)
    if png is not None and test.get("status") == "succeeded":
        png.write_bytes(api.request("GET", f"/lr-range-tests/{test['id']}/plot.png").content)
        say(f"wrote {png}")
    if as_json:
        emit_json(test)
    else:
        for line in summary(test):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if test.get("status") == "succeeded" else 1)


def register(app: typer.Typer) -> None:
    app.command("lr-find")(lr_find)
