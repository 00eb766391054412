"""What people read: tables and summaries of the API's answers (rich renderables)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from client.api import JSON, mlflow_link

SHOWN_METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_time(value: str | None) -> str:
    """An ISO time as ``2026-12-04 16:15:38`` (seconds, no zone: the server's UTC)."""
    return value.replace("T", " ")[:19] if value else "-"


def _id_column(table: Table, name: str = "id") -> None:
    # ids are for copying: never cut or wrapped
    table.add_column(name, no_wrap=True, min_width=32)


def fmt_params(params: dict[str, Any] | None) -> str:
    """``{"hyperparameters.learning_rate": 0.01}`` -> ``learning_rate=0.01`` (the last part
    of each path, or the whole path where two would read the same)."""
    params = params or {}
    short = [key.rsplit(".", 1)[-1] for key in params]
    names = [s if short.count(s) == 1 else key for s, key in zip(short, params, strict=True)]
    return " ".join(f"{n}={fmt(v)}" for n, v in zip(names, params.values(), strict=True))


def fmt_metrics(metrics: dict[str, Any] | None) -> str:
    metrics = metrics or {}
    return "  ".join(f"{k}={fmt(metrics[k])}" for k in SHOWN_METRICS if k in metrics)


def fmt_counts(counts: dict[str, int] | None) -> str:
    return "  ".join(f"{k}={v}" for k, v in sorted((counts or {}).items()) if v)


def diagnosis_lines(diagnosis: list[Any] | None) -> list[str]:
    lines = []
    for item in diagnosis or []:
        if isinstance(item, dict):
            text = f"{item.get('code')}: {item.get('message')}"
            if item.get("suggestion"):
                text += f" ({item['suggestion']})"
            lines.append(text)
        else:
            lines.append(str(item))
    return lines


#: The findings that name the learning rate (shown for every trial as it ends).
LR_FINDINGS = ("lr_too_high", "lr_too_low")


def lr_finding_lines(diagnosis: list[Any] | None) -> list[str]:
    """The learning-rate findings of a diagnosis, one line each, with the suggestion."""
    kept = [d for d in diagnosis or [] if isinstance(d, dict) and d.get("code") in LR_FINDINGS]
    return diagnosis_lines(kept)


def ceiling_lines(sweep: JSON) -> list[str]:
    """The sweep's divergence ceiling(s) and the range test its bounds came from."""
    lines = []
    for c in sweep.get("divergence_ceiling") or []:
        where = f" with {fmt_params(c['params'])}" if c.get("params") else ""
        lines.append(
            f"divergence ceiling: {c['parameter']} >= {fmt(c['learning_rate'])}{where} "
            f"(trial {c.get('trial_index')} diverged there); rates at or above it are skipped"
        )
    test = sweep.get("range_test")
    if test:
        bounds = "pending"
        if test.get("min") is not None:
            bounds = f"[{fmt(test['min'])}, {fmt(test['max'])}]"
        lines.append(
            f"{test['parameter']} bounds from range test {test['id']} ({test['status']}): {bounds}"
        )
    return lines


def _pairs(rows: list[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text(fmt(value)))
    return table


def job_view(job: JSON) -> RenderableType:
    """A job: status, progress, best epoch and metrics, diagnosis, links."""
    progress = job.get("progress") or {}
    rows: list[tuple[str, Any]] = [
        ("job", job["id"]),
        ("name", job.get("name")),
        ("status", job.get("status")),
        ("epochs", f"{progress.get('epoch')}/{fmt(progress.get('epochs'))}"),
    ]
    if job.get("sweep_id"):
        rows.append(("sweep", f"{job['sweep_id']} (trial {job.get('trial_index')})"))
        rows.append(("params", fmt_params(job.get("params"))))
    if job.get("reused_from"):
        rows.append(("reused from", job["reused_from"]))
    rows.append(("best epoch", job.get("best_epoch")))
    rows.append(("best", fmt_metrics(job.get("best_metrics"))))
    rows.append(("latest", fmt_metrics(job.get("latest_metrics"))))
    for key in ("error", "prune_reason"):
        if job.get(key):
            rows.append((key.replace("_", " "), job[key]))
    timings = job.get("timings") or {}
    rows.append(("trained", f"{fmt(timings.get('train_seconds'))} s"))
    rows.append(("mlflow", mlflow_link(job)))
    parts: list[RenderableType] = [_pairs(rows)]
    lines = diagnosis_lines(job.get("diagnosis"))
    if lines:
        parts.append(Text("diagnosis:", style="bold"))
        parts.extend(Text(f"  - {line}") for line in lines)
    return Group(*parts)


def sweep_view(sweep: JSON) -> RenderableType:
    """A sweep: status, counts, best trial, the top of its leaderboard, links."""
    objective = sweep.get("objective") or {}
    best = sweep.get("best_trial")
    rows: list[tuple[str, Any]] = [
        ("sweep", sweep["id"]),
        ("name", sweep.get("name")),
        ("experiment", sweep.get("experiment")),
        ("status", sweep.get("status")),
        ("method", f"{sweep.get('method')}, {sweep.get('n_created')}/{sweep.get('n_trials')}"),
        ("trials", fmt_counts(sweep.get("counts"))),
        ("objective", f"{objective.get('metric')} ({objective.get('goal')})"),
        ("best", best_line(best) if best else None),
        ("mlflow", mlflow_link(sweep)),
    ]
    parts: list[RenderableType] = [_pairs(rows)]
    if sweep.get("leaderboard"):
        parts.append(leaderboard_table(sweep["leaderboard"], title="top of the leaderboard"))
    return Group(*parts)


def best_line(row: JSON) -> str:
    return (
        f"{fmt(row.get('objective'))} trial {row.get('trial_index')} "
        f"{fmt_params(row.get('params'))} (job {row.get('job_id')})"
    )


def leaderboard_table(rows: list[JSON], *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("rank", "right"),
        ("trial", "right"),
        ("status", "left"),
        ("objective", "right"),
        ("best epoch", "right"),
        ("epochs", "right"),
        ("params", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    _id_column(table, "job")
    for row in rows:
        table.add_row(
            fmt(row.get("rank")),
            fmt(row.get("trial_index")),
            fmt(row.get("status")),
            fmt(row.get("objective")),
            fmt(row.get("best_epoch")),
            fmt(row.get("epochs_done")),
            fmt_params(row.get("params")),
            fmt(row.get("job_id")),
        )
    return table


def jobs_table(items: list[JSON], *, title: str | None = "jobs") -> Table:
    table = Table(title=title, title_justify="left")
    _id_column(table)
    for name in ("name", "status", "epochs", "objective", "sweep"):
        table.add_column(name)
    table.add_column("created", no_wrap=True)
    for job in items:
        progress = job.get("progress") or {}
        table.add_row(
            job["id"],
            fmt(job.get("name")),
            fmt(job.get("status")),
            f"{progress.get('epoch')}/{fmt(progress.get('epochs'))}",
            fmt(job.get("objective")),
            fmt(job.get("sweep_id") and f"{job['sweep_id'][:8]}#{job.get('trial_index')}"),
            fmt_time((job.get("timings") or {}).get("created_at")),
        )
    return table


def sweeps_table(items: list[JSON], *, title: str | None = "sweeps") -> Table:
    table = Table(title=title, title_justify="left")
    _id_column(table)
    for name in ("name", "status", "method", "trials", "best"):
        table.add_column(name)
    table.add_column("created", no_wrap=True)
    for sweep in items:
        best = sweep.get("best_trial") or {}
        table.add_row(
            sweep["id"],
            fmt(sweep.get("name")),
            fmt(sweep.get("status")),
            fmt(sweep.get("method")),
            fmt_counts(sweep.get("counts")),
            fmt(best.get("objective")),
            fmt_time((sweep.get("timings") or {}).get("created_at")),
        )
    return table


def tokens_table(items: list[JSON]) -> Table:
    table = Table(title="tokens", title_justify="left")
    _id_column(table)
    for name in ("user", "admin", "name", "created", "last used", "revoked"):
        table.add_column(name)
    for tok in items:
        table.add_row(
            tok["id"],
            fmt(tok.get("user")),
            "yes" if tok.get("admin") else "no",
            fmt(tok.get("name")),
            fmt_time(tok.get("created_at")),
            fmt_time(tok.get("last_used_at")),
            fmt_time(tok.get("revoked_at")),
        )
    return table


#: Up to this many classes, a column of probability each; beyond, the predicted one's.
PROBABILITY_COLUMNS = 5


def predictions_table(answer: JSON) -> Table:
    """One row per input row: the prediction, and the probability of each class (or of
    the predicted class, when there are many)."""
    classes = answer.get("classes") or []
    probabilities = answer.get("probabilities")
    each = bool(probabilities) and len(classes) <= PROBABILITY_COLUMNS
    table = Table()
    table.add_column("row", justify="right")
    table.add_column("prediction", no_wrap=True)
    if each:
        for label in classes:
            table.add_column(f"p({label})", justify="right")
    elif probabilities:
        table.add_column("p(prediction)", justify="right")
    for i, prediction in enumerate(answer.get("predictions") or []):
        cells = [str(i + 1), fmt(prediction)]
        if probabilities and each:
            cells.extend(fmt(p) for p in probabilities[i])
        elif probabilities:
            cells.append(fmt(max((p for p in probabilities[i] if p is not None), default=None)))
        table.add_row(*cells)
    return table
