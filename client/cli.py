"""`sweeplab`: submit, watch and inspect jobs and sweeps; get trained models out.

A thin shell over :class:`client.api.Client`. Every read command has ``--json``
(the API's own JSON on stdout, messages on stderr). Exit codes: 0 done and
succeeded, 1 ended failed/diverged/cancelled, 2 bad usage or a 4xx, 3 the
server is unreachable (client/outcome.py).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from client import lrfind, outcome, stackcmd, tokencmd
from client.api import JSON, Client, kind_of, metric_rows, mlflow_link
from client.chart import draw_chart
from client.errors import ApiError, BadInput, ClientError
from client.render import (
    job_view,
    jobs_table,
    leaderboard_table,
    predictions_table,
    sweep_view,
    sweeps_table,
)
from client.shell import Options, client, emit_json, err, in_feature_order, out, read_csv_rows, say
from client.specfile import load_spec
from client.watch import RETRY_SECONDS
from client.watch import watch as watch_live

app = typer.Typer(
    name="sweeplab",
    help=__doc__.split("\n\n")[0] if __doc__ else None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(tokencmd.token_app, name="token")

JsonFlag = Annotated[bool, typer.Option("--json", help="print the API's JSON only")]
IdArg = Annotated[str, typer.Argument(help="a job or sweep id", metavar="ID")]
Poll = Annotated[float, typer.Option(help="seconds between polls", min=0.1)]


@app.callback()
def main_options(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="the API (default: $SWEEPLAB_URL, else the local stack)")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="API token (default: $SWEEPLAB_TOKEN, else var/admin.token)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds per HTTP request")] = 30.0,
) -> None:
    ctx.obj = Options(url=url, token=token, timeout=timeout)


def _follow(
    api: Client, id: str, as_json: bool, poll: float, retry_for: float = RETRY_SECONDS
) -> None:
    """Watch to the end (live on a terminal), print the result, exit 0 or 1."""
    final = watch_live(api, id, err if as_json else out, poll=poll, retry_for=retry_for)
    if as_json:
        emit_json(final)
    elif kind_of(final) == "sweep":
        out.print(sweep_view(final))
    raise typer.Exit(outcome.outcome_code(final))


@app.command()
def submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a job or sweep spec, JSON or YAML (- for stdin)")],
    wait: Annotated[bool, typer.Option("--wait", help="watch it to the end; exit 0/1")] = False,
    as_json: JsonFlag = False,
    poll: Poll = 1.0,
) -> None:
    """Submit a job or a sweep (told apart by content)."""
    kind, spec = load_spec(file)
    api = client(ctx)
    created = api.submit(spec)
    if not as_json or not wait:
        if as_json:
            emit_json(created)
        else:
            size = f": {created.get('n_trials')} trials" if kind == "sweep" else ""
            out.print(f"submitted {kind} {created['id']} ({created.get('name') or '-'}){size}")
            if created.get("reused_from"):
                out.print(f"an identical job had succeeded: reused {created['reused_from']}")
            if not wait:
                out.print(f"watch it with: sweeplab watch {created['id']}")
    if wait:
        _follow(api, created["id"], as_json, poll)


@app.command()
def watch(
    ctx: typer.Context,
    id: IdArg,
    as_json: JsonFlag = False,
    poll: Poll = 1.0,
    retry_for: Annotated[
        float, typer.Option(min=0, help="seconds to keep asking a server that went away")
    ] = RETRY_SECONDS,
) -> None:
    """Live progress until the job or sweep ends (exit 0 succeeded, 1 otherwise)."""
    _follow(client(ctx), id, as_json, poll, retry_for)


@app.command("ls")
def list_(
    ctx: typer.Context,
    jobs: Annotated[bool, typer.Option("--jobs", help="jobs only (trials too)")] = False,
    sweeps: Annotated[bool, typer.Option("--sweeps", help="sweeps only")] = False,
    sweep: Annotated[str | None, typer.Option(help="the trials of this sweep")] = None,
    status: Annotated[str | None, typer.Option(help="comma-separated statuses")] = None,
    limit: Annotated[int, typer.Option(min=1, help="rows at most (each list)")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List sweeps and jobs, newest first."""
    api = client(ctx)
    show_jobs = jobs or sweep is not None or not sweeps
    show_sweeps = sweeps or not (jobs or sweep is not None)
    found: dict[str, JSON] = {}
    # one row more than shown: whether the list goes on ("more", and a line on stderr)
    if show_sweeps:
        items = api.sweeps(status=status, limit=limit + 1)
        found["sweeps"] = {"items": items[:limit], "more": len(items) > limit}
    if show_jobs:
        items = api.jobs(status=status, sweep=sweep, limit=limit + 1)
        found["jobs"] = {"items": items[:limit], "more": len(items) > limit}
    if as_json:
        emit_json(found if len(found) > 1 else next(iter(found.values())))
    else:
        if "sweeps" in found:
            out.print(sweeps_table(found["sweeps"]["items"]))
        if "jobs" in found:
            out.print(jobs_table(found["jobs"]["items"]))
    for kind, listed in found.items():
        if listed["more"]:
            say(f"the {limit} newest {kind} shown; there are more (--limit N)")


@app.command()
def show(ctx: typer.Context, id: IdArg, as_json: JsonFlag = False) -> None:
    """Show a job or a sweep."""
    resource = client(ctx).get(id)
    if as_json:
        emit_json(resource)
    else:
        out.print(sweep_view(resource) if kind_of(resource) == "sweep" else job_view(resource))


@app.command()
def leaderboard(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="a sweep id", metavar="SWEEP_ID")],
    limit: Annotated[int | None, typer.Option(min=1, help="rows at most (default all)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A sweep's trials, best first."""
    rows = client(ctx).leaderboard(id, limit=limit)
    if as_json:
        emit_json({"sweep_id": id, "items": rows, "next_cursor": None})
    else:
        out.print(leaderboard_table(rows, title=f"leaderboard of sweep {id}"))


def _job_of(api: Client, id: str) -> str:
    """A job's id; a sweep's best trial's (said on stderr)."""
    job_id = api.best_job_id(id)
    if job_id != id:
        say(f"sweep {id}: its best trial, job {job_id}")
    return job_id


@app.command()
def curves(
    ctx: typer.Context,
    id: IdArg,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="metrics to draw (repeat)")
    ] = None,
    log: Annotated[bool, typer.Option("--log", help="log-scale y axis")] = False,
    png: Annotated[Path | None, typer.Option(help="also draw it into this PNG")] = None,
    width: Annotated[int, typer.Option(min=20)] = 60,
    height: Annotated[int, typer.Option(min=5)] = 15,
    as_json: JsonFlag = False,
) -> None:
    """The learning curve (a sweep: its best trial's), drawn in the terminal."""
    api = client(ctx)
    job_id = _job_of(api, id)
    body = api.request("GET", f"/jobs/{job_id}/metrics").json()
    if as_json:
        emit_json(body)
    rows = metric_rows(body)
    if not rows:
        say(f"job {job_id} has no epochs yet")
        raise typer.Exit(outcome.OK)
    charts = [metric] if metric else _default_charts(rows)
    if not as_json:
        for names in charts:
            series = {n: [r.get(n) for r in rows] for n in names}
            lines = draw_chart(
                series, x=[r["epoch"] for r in rows], width=width, height=height, log_y=log
            )
            out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    if png is not None:
        _draw_png(png, rows, charts, log=log, title=f"job {job_id}")
        say(f"wrote {png}")


def _default_charts(rows: list[JSON]) -> list[list[str]]:
    present = {key for row in rows for key, value in row.items() if value is not None}
    losses: list[str] = [m for m in ("train_loss", "val_loss") if m in present]
    accuracy: list[str] = [m for m in ("train_accuracy", "val_accuracy") if m in present]
    return [c for c in (losses, accuracy) if c]


def _draw_png(
    path: Path, rows: list[JSON], charts: list[list[str]], *, log: bool, title: str
) -> None:
    import matplotlib  # late: only `curves --png` needs it (seconds to import)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # late: as above

    fig, axes = plt.subplots(len(charts), 1, figsize=(7, 3.2 * len(charts)), squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for ax, names in zip(axes[:, 0], charts, strict=True):
        for name in names:
            ax.plot(epochs, [np.nan if r.get(name) is None else r[name] for r in rows], label=name)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@app.command()
def cancel(ctx: typer.Context, id: IdArg, as_json: JsonFlag = False) -> None:
    """Cancel a job or a sweep."""
    answer = client(ctx).cancel(id)
    if as_json:
        emit_json(answer)
    else:
        out.print(f"{kind_of(answer)} {id}: cancel requested ({answer.get('status')})")


@app.command()
def weights(
    ctx: typer.Context,
    id: IdArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the .npz")],
) -> None:
    """Download a job's final weights (a sweep: its best trial's) as .npz."""
    api = client(ctx)
    job_id = _job_of(api, id)
    blob = api.weights_npz(job_id)
    output.write_bytes(blob)
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        layers = [n for n in npz.files if n[:1] in "Wb" and n[1:].isdigit()]
        shapes = ", ".join(f"{n} {tuple(npz[n].shape)}" for n in layers)
        rest = ", ".join(n for n in npz.files if n not in layers)
    say(f"wrote {output} ({len(blob)} bytes), job {job_id}: {shapes}; also {rest}")


@app.command()
def predict(
    ctx: typer.Context,
    id: IdArg,
    file: Annotated[Path, typer.Argument(help="CSV of raw features with a header row")],
    target: Annotated[str | None, typer.Option(help="a column to leave out (the label)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Predict the rows of a CSV with a job's network (a sweep: its best trial's). When
    the job trained on an uploaded CSV, the columns are taken by name, in any order."""
    header, rows = read_csv_rows(file, target_column=target)
    api = client(ctx)
    job_id = _job_of(api, id)
    names = api.feature_names(job_id)
    if names:
        rows = in_feature_order(file, header, rows, names)
    answer = api.predict(job_id, rows)
    if as_json:
        emit_json(answer)
    else:
        out.print(f"predictions of job {answer.get('job_id')}", markup=False, highlight=False)
        out.print(predictions_table(answer))


@app.command("open")
def open_(
    ctx: typer.Context,
    id: IdArg,
    browser: Annotated[bool, typer.Option("--browser", "-b", help="open it in a browser")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The MLflow page of a job (its run) or a sweep (its trials compared)."""
    resource = client(ctx).get(id)
    if as_json:
        emit_json(resource.get("mlflow"))
        return
    link = mlflow_link(resource)
    if not link:
        say(f"{kind_of(resource)} {id} has no MLflow run yet (not mirrored yet, or mirroring off)")
        raise typer.Exit(outcome.ENDED_BADLY)
    out.print(link, markup=False, soft_wrap=True)
    if browser:
        import webbrowser  # late: only --browser needs it

        webbrowser.open(link)


@app.command()
def resume(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="SWEEP_ID")],
    wait: Annotated[bool, typer.Option("--wait")] = False,
    as_json: JsonFlag = False,
    poll: Poll = 1.0,
) -> None:
    """Continue a cancelled or failed sweep."""
    api = client(ctx)
    _a_sweep(api, id, "resume")
    _started(api, api.resume(id), "resumed", wait, as_json, poll)


@app.command()
def extend(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="SWEEP_ID")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="how many more trials")],
    wait: Annotated[bool, typer.Option("--wait")] = False,
    as_json: JsonFlag = False,
    poll: Poll = 1.0,
) -> None:
    """Add trials to a sweep (the sampler continues from what it has seen)."""
    api = client(ctx)
    _a_sweep(api, id, "extend")
    _started(api, api.extend(id, trials), f"extended by {trials} trials", wait, as_json, poll)


def _a_sweep(api: Client, id: str, command: str) -> None:
    """A usage error for the id of a job given where a sweep is wanted."""
    if api.kind(id) == "job":
        raise BadInput(f"{id} is a job; `sweeplab {command}` takes a sweep's id")


def _started(api: Client, sweep: JSON, what: str, wait: bool, as_json: bool, poll: float) -> None:
    if as_json and not wait:
        emit_json(sweep)
    elif not as_json:
        out.print(
            f"sweep {sweep['id']} {what}: {sweep.get('n_trials')} trials, {sweep.get('status')}"
        )
    if wait:
        _follow(api, sweep["id"], as_json, poll)


stackcmd.register(app)
lrfind.register(app)


def main(argv: list[str] | None = None) -> int:
    """The console script: run a command, turn client errors into messages and exit codes."""
    try:
        app(args=argv, prog_name="sweeplab", standalone_mode=True)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except ApiError as error:
        err.print(f"error: {error.describe()}", markup=False, highlight=False, soft_wrap=True)
        return outcome.exit_code_for(error)
    except ClientError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        return outcome.exit_code_for(error)
    except OSError as error:  # a file it was asked to write or read (-o, --png): usage
        where = f" {error.filename}" if error.filename else ""
        err.print(f"error: cannot use{where}: {error.strerror or error}", markup=False)
        return outcome.USAGE
    except KeyboardInterrupt:
        err.print("interrupted (the job or sweep goes on; `sweeplab watch ID` to follow it again)")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
