"""The MLflow mirror: copy jobs and sweeps from the database to MLflow, exactly once.

The database is the source of truth; MLflow is a copy that may lag but never
loses or duplicates anything. A sweep is an MLflow experiment with one parent
run and one nested child run per trial (``mlflow.parentRunId``); a single job
is a run in its experiment.

Exactly once
    * A run is created once: its id is stored in ``jobs.mlflow_run_id`` (and
      ``sweeps.mlflow_run_id``). Before creating one we search the experiment
      for a run tagged with the job's id, so a crash between ``create_run`` and
      the database commit does not leave a twin.
    * Epochs are logged in order, whole epochs per ``log_batch`` request (one
      SQL transaction on the server), and ``jobs.mlflow_synced_epoch`` is
      committed after each request. When this process is not sure what reached
      MLflow (first touch, or after an error) it reads the last step of the
      ``seconds`` metric history before logging again.
    * Each metric point carries the epoch row's own timestamp, so even a resent
      point is the same (key, step, timestamp, value) row, which the MLflow
      SQL store keeps once.
    * One mirror pass per job (and per sweep) at a time, across processes and
      hosts: a Redis lock.

Never in the way of training
    * :func:`job_progressed` only marks the job dirty for a per-process
      background thread that mirrors at most every ``MIRROR_INTERVAL`` seconds
      and backs off while MLflow does not answer.
    * :func:`job_finished` sends the Celery task ``sweeplab.mirror_job``
      (worker/mirror_tasks.py), which finalizes the run (tags, artifacts,
      status) and retries with backoff until MLflow answers.
    * MLflow HTTP calls use a short timeout and no urllib3 retry loop.
    * ``sweeplab.mirror_pending`` catches up on everything that lags.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from services.db.models import TERMINAL_STATUSES as TERMINAL
from services.sweeps import best_trial, leaderboard, policy_for
from services.trainer import flatten_record

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "sweeplab"
MIRROR_JOB_TASK = "sweeplab.mirror_job"
MIRROR_PENDING_TASK = "sweeplab.mirror_pending"
MIRROR_SWEEP_TASK = "sweeplab.mirror_sweep"
MIRROR_INTERVAL = 2.0  # seconds between two background passes in a training process
DOWN_BACKOFF = (5.0, 60.0)  # background backoff while MLflow does not answer: start, cap
HTTP_TIMEOUT_S = "5"
# Celery on Redis serves priority 0 (run_job's default) before 9: a mirror task
# then never holds up the next trial, it fills a worker slot that would idle.
# Jobs that ran at least LONG_JOB_S are mirrored at trial priority instead: their
# final mirror (~0.5 s) is small beside them, and their users watch MLflow.
LOW_PRIORITY = 9
LONG_JOB_S = 20.0
LOCK_SECONDS = 120  # a pass that takes longer loses its lock (and is simply redone)
SYNC_KEY = "seconds"  # present in every epoch record: its last step = last epoch mirrored

# MLflow's limits (mlflow/utils/validation.py): params and tags 100 per request
# (the client splits), metrics 1000 per request, param values 6000 characters.
MAX_METRICS_PER_REQUEST = 1000
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250

RUN_STATUS = {
    "queued": "SCHEDULED",
    "running": "RUNNING",
    "succeeded": "FINISHED",
    "failed": "FAILED",
    "diverged": "FAILED",
    "cancelled": "KILLED",
    "pruned": "KILLED",
}
SWEEP_RUN_STATUS = {"done": "FINISHED", "cancelled": "KILLED", "failed": "FAILED"}

ABBREVIATIONS = {
    "hyperparameters.learning_rate": "lr",
    "hyperparameters.batch_size": "bs",
    "hyperparameters.momentum": "mom",
    "hyperparameters.optimizer": "opt",
    "hyperparameters.l2": "l2",
    "hyperparameters.dropout": "drop",
    "hyperparameters.epochs": "ep",
    "hyperparameters.gradient_clip_norm": "clip",
    "architecture.initializer": "init",
}


# --------------------------------------------------------------------------- pure helpers


def enabled(settings: Any) -> bool:
    """Return True when mirroring is configured (``mlflow_tracking_uri`` set)."""
    return bool(getattr(settings, "mlflow_tracking_uri", None))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "...[truncated]"


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, separators=(",", ":"), default=str)
    return _clip(text, MAX_PARAM_VALUE)


def flatten_spec(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a job spec to MLflow params with dotted keys.

    Nested objects and lists of objects recurse (``architecture.layers.0.units``);
    lists of plain values (inline data arrays, schedule milestones) become one
    JSON value. Values are strings cut to MLflow's 6000-character limit.
    """
    out: dict[str, str] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_spec(value, path + "."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out.update(flatten_spec(item, f"{path}.{i}."))
        else:
            out[path[:MAX_KEY]] = _param_value(value)
    return out


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """Return the finite numbers of one epoch record, flat, without ``epoch``.

    Per-layer lists become ``grad_norm.layer_0`` and so on (the trainer's
    ``flatten_record`` shape); ``None`` and non-finite values are left out
    (MLflow cannot plot them and the diverged epoch carries ``None``).
    """
    out: dict[str, float] = {}
    for key, value in flatten_record(dict(record)).items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key[:MAX_KEY]] = float(value)
    return out


def _get(spec: Mapping[str, Any], dotted: str) -> Any:
    node: Any = spec
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and all(
        isinstance(v, Mapping) and "units" in v for v in value
    ):  # hidden layers: 64relu-32tanh
        return "-".join(f"{v['units']}{v.get('activation', 'relu')}" for v in value)
    if isinstance(value, Mapping | list):
        text = json.dumps(value, separators=(",", ":"))
        return text if len(text) <= 40 else text[:39] + "…"
    return str(value)


def _abbreviate(key: str) -> str:
    if key in ABBREVIATIONS:
        return ABBREVIATIONS[key]
    parts = key.split(".")
    if len(parts) >= 4 and parts[:2] == ["architecture", "layers"] and parts[2].isdigit():
        return f"{parts[3]}{parts[2]}"  # architecture.layers.0.units -> units0
    return parts[-1]


def run_name(spec: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """Return a run name a person can scan: ``lr=0.01 bs=32`` plus swept fields.

    ``params`` are a trial's swept values by dotted path; each one not already
    named is appended (``lr=0.01 bs=32 units0=128``).
    """
    names = ["hyperparameters.learning_rate", "hyperparameters.batch_size"]
    names += [k for k in (params or {}) if k not in names]
    parts = []
    for key in names:
        value = (params or {}).get(key, _get(spec, key))
        if key == "hyperparameters.batch_size" and value is None and key in (params or {}):
            value = "full"
        if value is None and key not in (params or {}):
            continue
        parts.append(f"{_abbreviate(key)}={_short_value(value)}")
    return " ".join(parts) or "run"


def architecture_string(
    spec: Mapping[str, Any],
    n_outputs: int | None = None,
    built: Mapping[str, Any] | None = None,
) -> str:
    """Return ``64-relu > 32-tanh > 10-softmax`` for a spec.

    ``built`` is the trained network's ``architecture()`` (``sizes`` from the
    input width on, one activation per layer), which knows the output width.
    Without it the output width comes from ``n_outputs``, and without that the
    output shows as its activation alone.
    """
    if built and built.get("sizes") and built.get("activations"):
        sizes, acts = list(built["sizes"]), list(built["activations"])
        if len(sizes) == len(acts) + 1:
            if built.get("output_activation"):
                acts[-1] = built["output_activation"]
            return " > ".join(f"{n}-{a}" for n, a in zip(sizes[1:], acts, strict=True))
    arch = spec.get("architecture") or {}
    parts = [
        f"{layer.get('units')}-{layer.get('activation', 'relu')}"
        for layer in arch.get("layers") or []
    ]
    out_act = arch.get("output_activation") or "auto"
    parts.append(f"{n_outputs}-{out_act}" if n_outputs else out_act)
    return " > ".join(parts)


def history_csv(history: Sequence[Mapping[str, Any]]) -> str:
    """Return the per-epoch history as CSV (one row per epoch, flattened columns)."""
    rows = [{"epoch": r.get("epoch"), **epoch_metrics(r)} for r in history]
    columns = ["epoch"] + sorted({k for row in rows for k in row if k != "epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


UI_WORKFLOW = "machine_learning"


def ui_links(
    ui_url: str, experiment_id: str, run_id: str | None, compare_run_ids: Sequence[str]
) -> dict[str, Any]:
    """Build the MLflow UI links for a run and a comparison of runs.

    A bare ``#/experiments/<id>`` lands on a GenAI overview in MLflow 3, so the
    experiment link is its runs table; the compare view takes URL-encoded JSON
    lists of run and experiment ids. Each link asks for the UI's "Model
    training" mode (``workflowType``), which otherwise defaults to GenAI.
    """
    base = ui_url.rstrip("/")
    mode = f"workflowType={UI_WORKFLOW}"
    runs = urllib.parse.quote(json.dumps(list(compare_run_ids), separators=(",", ":")))
    exps = urllib.parse.quote(json.dumps([experiment_id], separators=(",", ":")))
    experiment = f"{base}/#/experiments/{experiment_id}/runs"
    return {
        "experiment_id": experiment_id,
        "run_id": run_id,
        "run_url": f"{experiment}/{run_id}?{mode}" if run_id else None,
        "experiment_url": f"{experiment}?{mode}",
        "compare_url": f"{base}/#/compare-runs?runs={runs}&experiments={exps}&{mode}",
    }


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


# --------------------------------------------------------------------------- links (API side)


#: The links of a job or sweep that has no MLflow run yet (mirroring is on).
NOT_YET_MIRRORED = {"experiment_id": None, "run_id": None, "run_url": None,
                    "experiment_url": None, "compare_url": None, "mirrored": False}  # fmt: skip


def links_for_job(settings: Any, job: Any) -> dict[str, Any] | None:
    """Return the job's MLflow ids and UI links; None when mirroring is off, and
    ``NOT_YET_MIRRORED`` while the job has no run yet.

    Reads only the database row: no call to MLflow.
    """
    if not enabled(settings):
        return None
    if not job.mlflow_run_id or not job.mlflow_experiment_id:
        return dict(NOT_YET_MIRRORED)
    ui = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    links = ui_links(ui, job.mlflow_experiment_id, job.mlflow_run_id, [job.mlflow_run_id])
    links["mirrored"] = job.mlflow_synced_status == job.status
    return links


def links_for_sweep(settings: Any, sweep: Any) -> dict[str, Any] | None:
    """Return the sweep's MLflow ids and UI links (compare = its trials); None when
    mirroring is off, ``NOT_YET_MIRRORED`` while the sweep has no run yet.

    ``sweep`` must be attached to a session (the trials' run ids are read
    from the database, ordered by trial index).
    """
    if not enabled(settings):
        return None
    if not sweep.mlflow_experiment_id:
        return dict(NOT_YET_MIRRORED)
    from sqlalchemy import select
    from sqlalchemy.orm import object_session

    from services.db import Job

    session = object_session(sweep)
    trial_runs: list[str] = []
    if session is not None:
        trial_runs = list(
            session.scalars(
                select(Job.mlflow_run_id)
                .where(Job.sweep_id == sweep.id, Job.mlflow_run_id.is_not(None))
                .order_by(Job.trial_index, Job.created_at)
            )
        )
    ui = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    links = ui_links(ui, sweep.mlflow_experiment_id, sweep.mlflow_run_id, trial_runs)
    # True once the parent run is closed, hence every trial mirrored and in compare_url.
    links["mirrored"] = sweep.mlflow_synced_status == sweep.status
    return links


# --------------------------------------------------------------------------- per-process plumbing

_plumbing_lock = threading.Lock()
_sessions: dict[tuple[int, str], Any] = {}
_clients: dict[tuple[int, str], Any] = {}
_redis: dict[tuple[int, str], Any] = {}
_celery: dict[tuple[int, str], Any] = {}
_experiments: dict[tuple[str, str], str] = {}
# run id -> last epoch this process knows reached MLflow (absent: not sure)
_confirmed: dict[str, int] = {}


def _configure_http() -> None:
    # Short timeouts and no urllib3 retry loop: a mirror call that fails is
    # redone by our own schedule, never by blocking a caller for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    # set_terminated would print "View run ..." to the worker's stdout for every run.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _client(settings: Any) -> Any:
    key = (os.getpid(), settings.mlflow_tracking_uri)
    with _plumbing_lock:
        if key not in _clients:
            _configure_http()
            from mlflow.tracking import MlflowClient

            _clients[key] = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        return _clients[key]


def _session_factory(settings: Any) -> Any:
    key = (os.getpid(), settings.database_url)
    with _plumbing_lock:
        if key not in _sessions:
            from services.db import make_engine, make_session_factory

            _sessions[key] = make_session_factory(make_engine(settings.database_url))
        return _sessions[key]


def redis_client(settings: Any) -> Any:
    key = (os.getpid(), settings.redis_url)
    with _plumbing_lock:
        if key not in _redis:
            import redis

            _redis[key] = redis.Redis.from_url(
                settings.redis_url, socket_timeout=5, socket_connect_timeout=2
            )
        return _redis[key]


def _celery_app(settings: Any) -> Any:
    key = (os.getpid(), settings.redis_url)
    with _plumbing_lock:
        if key not in _celery:
            from services.celery_app import make_celery

            _celery[key] = make_celery(settings)
        return _celery[key]


def send_task(
    settings: Any,
    name: str,
    args: Sequence[Any] = (),
    countdown: float = 0,
    priority: int = LOW_PRIORITY,
) -> None:
    """Send a mirror task by name on the sweeplab queue (behind trials by default)."""
    _celery_app(settings).send_task(
        name,
        args=list(args),
        queue=settings.celery_queue,
        countdown=countdown or None,
        priority=priority,
    )


def warm_up() -> None:
    """Import the MLflow client and matplotlib now (about 2 s of CPU), not in a first mirror."""
    _configure_http()
    import mlflow.tracking  # noqa: F401
    from mlflow.entities import Metric  # noqa: F401

    from services import plots  # noqa: F401  (matplotlib)


class MirrorBusy(RuntimeError):
    """Another process is mirroring the same job or sweep right now."""


_local_locks: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def _mirror_lock(settings: Any, name: str) -> Iterator[None]:
    """Hold the mirror lock ``name`` (process-local and in Redis) or raise MirrorBusy."""
    with _plumbing_lock:
        local = _local_locks.setdefault(name, threading.Lock())
    if not local.acquire(blocking=False):
        raise MirrorBusy(name)
    try:
        lock = redis_client(settings).lock(
            f"sweeplab:mirror:{name}", timeout=LOCK_SECONDS, blocking=False
        )
        if not lock.acquire(blocking=False):
            raise MirrorBusy(name)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired: the next pass redoes the work
                lock.release()
    finally:
        local.release()


# --------------------------------------------------------------------------- snapshots


@dataclass
class JobSnapshot:
    """What one mirror pass needs of a job, read in one short transaction."""

    id: str
    status: str
    name: str | None
    spec: dict[str, Any]
    params: dict[str, Any] | None
    sweep_id: str | None
    trial_index: int | None
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    synced_epoch: int
    synced_status: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    diagnosis: list[Any] | None
    error: str | None
    prune_reason: str | None
    best_epoch: int | None
    objective: float | None
    attempts: int
    worker: str | None
    epochs: list[tuple[int, int | None, dict[str, Any]]] = field(default_factory=list)


@dataclass
class SweepSnapshot:
    id: str
    name: str | None
    experiment: str
    status: str
    method: str
    spec: dict[str, Any]
    objective_metric: str
    objective_goal: str
    n_trials: int
    max_concurrency: int
    created_at: datetime | None
    finished_at: datetime | None
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    synced_status: str | None


def _experiment_name(value: str | None) -> str:
    return (value or "").strip() or DEFAULT_EXPERIMENT


def _load_job(session: Any, job_id: str, *, after_epoch: int | None) -> JobSnapshot | None:
    from sqlalchemy import select

    from services.db import Job, JobMetric

    job = session.get(Job, job_id)
    if job is None:
        return None
    snap = JobSnapshot(
        id=job.id, status=job.status, name=job.name, spec=dict(job.spec or {}),
        params=job.params, sweep_id=job.sweep_id, trial_index=job.trial_index,
        mlflow_run_id=job.mlflow_run_id, mlflow_experiment_id=job.mlflow_experiment_id,
        synced_epoch=job.mlflow_synced_epoch or 0, synced_status=job.mlflow_synced_status,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        result=job.result, diagnosis=job.diagnosis, error=job.error,
        prune_reason=job.prune_reason, best_epoch=job.best_epoch, objective=job.objective,
        attempts=job.attempts, worker=job.worker,
    )  # fmt: skip
    floor = snap.synced_epoch if after_epoch is None else after_epoch
    rows = session.execute(
        select(JobMetric.epoch, JobMetric.created_at, JobMetric.metrics)
        .where(JobMetric.job_id == job_id, JobMetric.epoch > floor)
        .order_by(JobMetric.epoch)
    )
    snap.epochs = [(epoch, _ms(created), dict(metrics or {})) for epoch, created, metrics in rows]
    return snap


def _load_sweep(session: Any, sweep_id: str) -> SweepSnapshot | None:
    from services.db import Sweep

    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return None
    return SweepSnapshot(
        id=sweep.id, name=sweep.name, experiment=_experiment_name(sweep.experiment),
        status=sweep.status, method=sweep.method, spec=dict(sweep.spec or {}),
        objective_metric=sweep.objective_metric, objective_goal=sweep.objective_goal,
        n_trials=sweep.n_trials, max_concurrency=sweep.max_concurrency,
        created_at=sweep.created_at, finished_at=sweep.finished_at,
        mlflow_run_id=sweep.mlflow_run_id, mlflow_experiment_id=sweep.mlflow_experiment_id,
        synced_status=sweep.mlflow_synced_status,
    )  # fmt: skip


@contextlib.contextmanager
def session_scope(settings: Any) -> Iterator[Any]:
    session = _session_factory(settings)()
    try:
        yield session
    finally:
        session.close()


def _update_job(settings: Any, job_id: str, *, force: bool = False, **values: Any) -> None:
    """Write mirror bookkeeping in its own short transaction (leaves updated_at alone)."""
    from sqlalchemy import update

    from services.db import Job

    stmt = update(Job).where(Job.id == job_id)
    if "mlflow_synced_epoch" in values and not force:  # never move backwards
        stmt = stmt.where(Job.mlflow_synced_epoch < values["mlflow_synced_epoch"])
    with session_scope(settings) as session:
        session.execute(stmt.values(updated_at=Job.updated_at, **values))
        session.commit()


def _update_sweep(settings: Any, sweep_id: str, **values: Any) -> None:
    from sqlalchemy import update

    from services.db import Sweep

    with session_scope(settings) as session:
        session.execute(
            update(Sweep).where(Sweep.id == sweep_id).values(updated_at=Sweep.updated_at, **values)
        )
        session.commit()


# --------------------------------------------------------------------------- MLflow side


# MLflow 3's UI opens an experiment without this tag in its GenAI mode (traces,
# prompts); ours are model-training experiments, shown with runs and metrics.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
EXPERIMENT_TAGS = {"sweeplab.managed": "true", EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}


def _experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    key = (tracking_uri, name)
    if key in _experiments:
        return _experiments[key]
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, tags=EXPERIMENT_TAGS)
        except MlflowException:  # created by another process in between
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    _experiments[key] = exp_id
    return exp_id


def _find_run(client: Any, experiment_id: str, tag: str, value: str, kind: str) -> str | None:
    from mlflow.entities import ViewType

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag}` = '{value}' and tags.`sweeplab.kind` = '{kind}'",
        run_view_type=ViewType.ALL,
        max_results=5,
        order_by=["attributes.start_time ASC"],
    )
    if not runs:
        return None
    run = runs[0]
    if run.info.lifecycle_stage == "deleted":
        client.restore_run(run.info.run_id)
    return run.info.run_id


def _tags(pairs: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, _clip(str(v), MAX_TAG_VALUE)) for k, v in pairs.items() if v is not None]


def _params(pairs: Mapping[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, v) for k, v in pairs.items()]


def _job_tags(snap: JobSnapshot, sweep_run_id: str | None) -> dict[str, Any]:
    codes = [d.get("code", "?") for d in snap.diagnosis or [] if isinstance(d, Mapping)]
    tags: dict[str, Any] = {
        "sweeplab.kind": "job",
        "sweeplab.job_id": snap.id,
        "sweeplab.sweep_id": snap.sweep_id or "",
        "sweeplab.status": snap.status,
        "sweeplab.architecture": architecture_string(
            snap.spec, _n_outputs(snap), (snap.result or {}).get("architecture")
        ),
        "sweeplab.dataset": _get(snap.spec, "dataset.name"),
    }
    if snap.sweep_id:
        tags["mlflow.parentRunId"] = sweep_run_id
        tags["sweeplab.trial_index"] = snap.trial_index
    if snap.status in TERMINAL:
        tags["sweeplab.diagnosis"] = ",".join(codes) if codes else "healthy"
        tags["sweeplab.diverged"] = str(snap.status == "diverged").lower()
        tags["sweeplab.pruned"] = str(snap.status == "pruned").lower()
        tags["sweeplab.best_epoch"] = snap.best_epoch
        tags["sweeplab.attempts"] = snap.attempts
        tags["sweeplab.worker"] = snap.worker
        if snap.prune_reason:
            tags["sweeplab.prune_reason"] = snap.prune_reason
        note = [f"sweeplab job `{snap.id}`: **{snap.status}**"]
        if snap.error:
            note.append(f"\n\nError:\n\n```\n{snap.error}\n```")
        if snap.prune_reason:
            note.append(f"\n\nPruned: {snap.prune_reason}")
        for d in snap.diagnosis or []:
            if isinstance(d, Mapping):
                note.append(f"\n\n- **{d.get('code')}**: {d.get('message', '')}")
        tags["mlflow.note.content"] = "".join(note)
    return tags


def _n_outputs(snap: Any) -> int | None:
    """The output layer's width, from the trainer's result (its dataset summary)."""
    result = snap.result or {}
    arch = result.get("architecture")
    if isinstance(arch, Mapping) and isinstance(arch.get("sizes"), list) and arch["sizes"]:
        return int(arch["sizes"][-1])
    data = result.get("dataset")
    if not isinstance(data, Mapping):
        return None
    if data.get("task") == "classification" and isinstance(data.get("n_classes"), int):
        out_act = _get(getattr(snap, "spec", None) or {}, "architecture.output_activation")
        return 1 if data["n_classes"] == 2 and out_act == "sigmoid" else data["n_classes"]
    if data.get("task") == "regression":
        return 1
    return None


def _ensure_job_run(settings: Any, client: Any, snap: JobSnapshot) -> tuple[str, bool]:
    """Return the job's run id, creating the run (and its sweep's parent) once.

    The flag is True when the run was created just now (nothing logged to it yet).
    """
    if snap.mlflow_run_id:
        return snap.mlflow_run_id, False
    parent_run_id = None
    if snap.sweep_id:
        with session_scope(settings) as session:
            sweep = _load_sweep(session, snap.sweep_id)
        if sweep is not None and sweep.mlflow_run_id and sweep.mlflow_experiment_id:
            parent_run_id, exp_id = sweep.mlflow_run_id, sweep.mlflow_experiment_id
        else:
            parent_run_id, exp_id = mirror_sweep(
                settings, snap.sweep_id, client=client, finalize=False
            )
    else:
        exp_id = _experiment_id(
            client, settings.mlflow_tracking_uri, _experiment_name(snap.spec.get("experiment"))
        )
    run_id = _find_run(client, exp_id, "sweeplab.job_id", snap.id, "job")
    fresh = run_id is None
    if run_id is None:
        try:
            run = client.create_run(
                exp_id,
                start_time=_ms(snap.started_at or snap.created_at),
                tags={
                    k: str(v) for k, v in _job_tags(snap, parent_run_id).items() if v is not None
                },
                run_name=run_name(snap.spec, snap.params),
            )
        except Exception:
            _experiments.clear()  # the experiment may have gone: look it up afresh next time
            raise
        run_id = run.info.run_id
        if snap.synced_epoch:  # a new run holds nothing, whatever the row said
            with session_scope(settings) as session:
                snap.epochs = _load_job(session, snap.id, after_epoch=0).epochs  # type: ignore[union-attr]
            snap.synced_epoch = 0
    values = {"mlflow_run_id": run_id, "mlflow_experiment_id": exp_id}
    if fresh:
        values["mlflow_synced_epoch"] = 0
    _update_job(settings, snap.id, force=True, **values)
    snap.mlflow_run_id, snap.mlflow_experiment_id = run_id, exp_id
    return run_id, fresh


def _last_logged_epoch(client: Any, run_id: str) -> int:
    history = client.get_metric_history(run_id, SYNC_KEY)
    return max((m.step for m in history), default=0)


def _log_epochs(
    settings: Any,
    client: Any,
    snap: JobSnapshot,
    run_id: str,
    *,
    fresh: bool = False,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """Log every epoch after the last one MLflow has, whole epochs per request.

    The params ride along in the first request when the run is new (``fresh``)
    or this process is not sure of it, and ``tags`` in the last one: a short
    job's whole run is then one create and one ``log_batch``.
    """
    from mlflow.entities import Metric

    done = snap.synced_epoch
    params: list[Any] = []
    if fresh:
        _confirmed[run_id] = done
    if _confirmed.get(run_id) != done:
        # Not sure what reached MLflow (new process, or a request that failed
        # after the server may have stored it): ask MLflow. Params are
        # idempotent (same key, same value), so they may be sent again.
        done = max(done, _last_logged_epoch(client, run_id))
        params = _params(flatten_spec(snap.spec))
    elif fresh:
        params = _params(flatten_spec(snap.spec))
    final_tags = _tags(tags or {})
    # Keep every metric of a request in the first of the client's chunks (it
    # sends at most 100 params and 100 tags, then fills up to 1000 entities).
    budget = MAX_METRICS_PER_REQUEST - min(len(params), 100) - min(len(final_tags), 100)
    batch: list[Any] = []
    batch_last = done

    def flush(last: bool) -> None:
        nonlocal batch, done, params
        extra = final_tags if last else []
        if batch or params or extra:
            _confirmed.pop(run_id, None)
            client.log_batch(run_id, metrics=batch, params=params, tags=extra, synchronous=True)
            batch, params = [], []
        if batch_last > snap.synced_epoch:
            _update_job(settings, snap.id, mlflow_synced_epoch=batch_last)
            snap.synced_epoch = batch_last
        done = batch_last
        _confirmed[run_id] = done

    fallback_ms = _ms(snap.started_at or snap.created_at) or int(time.time() * 1000)
    for epoch, stamp, record in snap.epochs:
        if epoch <= done:
            continue
        points = [
            Metric(key, value, stamp or fallback_ms + epoch, epoch)
            for key, value in epoch_metrics(record).items()
        ]
        if batch and len(batch) + len(points) > budget:
            flush(last=False)
        batch.extend(points)
        batch_last = epoch
    flush(last=True)


def _artifacts(settings: Any, snap: JobSnapshot, history: list[dict[str, Any]]) -> dict[str, bytes]:
    from services import plots

    files = {
        "spec.json": json.dumps(snap.spec, indent=2, sort_keys=True).encode(),
        "history.csv": history_csv(history).encode(),
        "diagnosis.json": json.dumps(snap.diagnosis or [], indent=2).encode(),
    }
    if history:
        title = f"{run_name(snap.spec, snap.params)} ({snap.status})"
        files["learning_curve.png"] = plots.learning_curve_png(history, title=title)
    weights = final_weights(settings, snap.id)
    if weights is not None:
        files[weights[0]] = weights[1]
    return files


def final_weights(settings: Any, job_id: str) -> tuple[str, bytes] | None:
    """Return (artifact name, ``.npz`` bytes) of the job's last stored weights, or None.

    The network the job ended with (``job_weights``, stored when training
    returned) wins; a job that failed mid-way has only its latest checkpoint,
    whose weights are named ``weights_epoch_<k>.npz``.
    """
    from services.db import Job, JobCheckpoint, JobWeights

    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        final = session.get(JobWeights, job_id)
        if final is not None:
            return "weights.npz", bytes(final.data)
        ckpt = session.get(JobCheckpoint, job_id)
        if ckpt is None:
            return None
        blob, epoch, last = bytes(ckpt.data), ckpt.epoch, job.epochs_done
    try:
        npz = checkpoint_weights_npz(blob)
    except Exception:  # a checkpoint we cannot read must not stop the mirror
        log.warning("cannot read the weights of job %s from its checkpoint", job_id, exc_info=True)
        return None
    return ("weights.npz" if epoch >= last else f"weights_epoch_{epoch}.npz"), npz


def checkpoint_weights_npz(blob: bytes) -> bytes:
    """Turn a trainer checkpoint into the ``Network.to_npz_bytes()`` format."""
    from services.trainer import checkpoint, network

    ckpt = checkpoint.load_checkpoint(blob)
    arch = ckpt.meta["architecture"]
    net = network._from_architecture(arch, arch["dtype"])
    net.set_canonical(ckpt.params)
    return net.to_npz_bytes()


def _objective_key(session: Any, job_id: str) -> str | None:
    """The metric a job's ``objective`` is (its sweep's, or its own best epoch's)."""
    from services.db import Job

    job = session.get(Job, job_id)
    return None if job is None else policy_for(session, job)[0].key(job.spec or {})


def _finalize_job(settings: Any, client: Any, snap: JobSnapshot, run_id: str) -> None:
    from mlflow.entities import Metric

    with session_scope(settings) as session:
        full = _load_job(session, snap.id, after_epoch=0)
        key = _objective_key(session, snap.id)
    history = [{"epoch": e, **rec} for e, _, rec in (full.epochs if full else [])]
    if full is not None and full.result:
        snap.result = full.result
    # The number the job is ranked by, so that MLflow's compare view can sort the
    # trials as the API's leaderboard does (the per-epoch metrics end at the last epoch).
    value = snap.objective
    if key and value is not None and math.isfinite(value):
        name = f"best_{key}"
        if name not in client.get_run(run_id).data.metrics:  # once, if this pass is redone
            stamp = _ms(snap.finished_at) or int(time.time() * 1000)
            metric = Metric(name, float(value), stamp, snap.best_epoch or 0)
            client.log_batch(run_id, metrics=[metric], synchronous=True)
    with tempfile.TemporaryDirectory(prefix="sweeplab-mirror-") as tmp:
        for name, data in _artifacts(settings, snap, history).items():
            Path(tmp, name).write_bytes(data)
        client.log_artifacts(run_id, tmp)
    client.set_terminated(run_id, RUN_STATUS[snap.status], end_time=_ms(snap.finished_at))
    _update_job(settings, snap.id, mlflow_synced_status=snap.status)
    _confirmed.pop(run_id, None)


def mirror_job(
    settings: Any,
    job_id: str,
    *,
    finalize: bool = True,
    client: Any = None,
    then_sweep: bool = True,
) -> bool:
    """Bring the job's MLflow run up to date with the database.

    Logs the epochs not yet mirrored; with ``finalize`` and a finished job,
    also its final tags, artifacts and status, then its sweep's parent run.
    Returns True when nothing is left to do for the job's present state.
    Raises MirrorBusy when another process holds the job, and MLflow's or the
    network's errors as they come (callers retry).
    """
    if not enabled(settings):
        return True
    client = client or _client(settings)
    with _mirror_lock(settings, f"job:{job_id}"):
        with session_scope(settings) as session:
            snap = _load_job(session, job_id, after_epoch=None)
        if snap is None:
            return True
        if snap.status == "queued" and not snap.epochs:
            return True
        if snap.synced_status == snap.status and snap.status in TERMINAL and not snap.epochs:
            return True
        run_id, fresh = _ensure_job_run(settings, client, snap)
        final = finalize and snap.status in TERMINAL and snap.synced_status != snap.status
        tags = _job_tags(snap, None) if final else None
        _log_epochs(settings, client, snap, run_id, fresh=fresh, tags=tags)
        if snap.status not in TERMINAL:
            return True
        if not finalize:
            return False
        if final:
            _finalize_job(settings, client, snap, run_id)
    if snap.sweep_id and then_sweep:
        with contextlib.suppress(MirrorBusy):  # the holder, or mirror_pending, finishes it
            mirror_sweep(settings, snap.sweep_id, client=client, finalize=True)
    return True


# --------------------------------------------------------------------------- sweeps


def _sweep_params(sweep: SweepSnapshot) -> dict[str, str]:
    spec = sweep.spec
    params = {
        "sweep.method": sweep.method,
        "sweep.objective": f"{sweep.objective_metric} ({sweep.objective_goal})",
        "sweep.n_trials": str(sweep.n_trials),
        "sweep.max_concurrency": str(sweep.max_concurrency),
    }
    for key in ("parameters", "early_stopping"):
        if spec.get(key) is not None:
            params[f"sweep.{key}"] = _param_value(spec[key])
    return params


def _sweep_trials(settings: Any, sweep_id: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from services.db import Job, Sweep

    with session_scope(settings) as session:
        jobs = session.scalars(
            select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_index)
        ).all()
        sweep = session.get(Sweep, sweep_id)
        best = best_trial(sweep, leaderboard(sweep, list(jobs))) if sweep is not None else None
        return [
            {
                "id": j.id, "status": j.status, "spec": j.spec, "params": j.params,
                "objective": j.objective, "run_id": j.mlflow_run_id,
                "synced_status": j.mlflow_synced_status, "trial_index": j.trial_index,
                "best_metrics": j.best_metrics, "best": j is best,
            }
            for j in jobs
        ]  # fmt: skip


def _best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trial as the API ranks it (``services.sweeps.best_trial``)."""
    return next((t for t in trials if t["best"]), None)


def _finalize_sweep(
    settings: Any, client: Any, sweep: SweepSnapshot, run_id: str, trials: list[dict[str, Any]]
) -> None:
    from mlflow.entities import Metric

    counts: dict[str, int] = {}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    tags: dict[str, Any] = {
        "sweeplab.status": sweep.status,
        "sweeplab.counts": json.dumps(counts, sort_keys=True),
    }
    best = _best_trial(trials)
    params: dict[str, str] = {}
    metrics = []
    if best is not None:
        tags.update(
            {"sweeplab.best_job_id": best["id"], "sweeplab.best_run_id": best["run_id"],
             "sweeplab.best_trial_index": best["trial_index"],
             "sweeplab.best_run_name": run_name(best["spec"], best["params"])}
        )  # fmt: skip
        params = flatten_spec(best["spec"])
        existing = client.get_run(run_id).data.metrics
        key = f"best_{sweep.objective_metric}"
        if key not in existing:  # logged once, even if this pass is redone
            stamp = _ms(sweep.finished_at) or int(time.time() * 1000)
            metrics = [Metric(key, float(best["objective"]), stamp, 0)]
    client.log_batch(
        run_id, metrics=metrics, params=_params(params), tags=_tags(tags), synchronous=True
    )
    swept = (sweep.spec.get("parameters") or {}).keys()
    if "hyperparameters.learning_rate" in swept:
        from services import plots

        others = [k for k in swept if k != "hyperparameters.learning_rate"]
        points = [
            {"learning_rate": _get(t["spec"], "hyperparameters.learning_rate"),
             "objective": t["objective"], "diverged": t["status"] == "diverged",
             "pruned": t["status"] == "pruned",
             "series": " ".join(f"{_abbreviate(k)}={_short_value(_get(t['spec'], k))}"
                                for k in others)}
            for t in trials
            if t["status"] in TERMINAL and t["status"] != "cancelled"
        ]  # fmt: skip
        points = [p for p in points if isinstance(p["learning_rate"], int | float)]
        if points:
            png = plots.lr_sweep_png(points, sweep.objective_metric, sweep.objective_goal)
            with tempfile.TemporaryDirectory(prefix="sweeplab-mirror-") as tmp:
                path = Path(tmp, "objective_vs_learning_rate.png")
                path.write_bytes(png)
                client.log_artifact(run_id, str(path))
    with tempfile.TemporaryDirectory(prefix="sweeplab-mirror-") as tmp:
        path = Path(tmp, "sweep.json")
        path.write_text(json.dumps(sweep.spec, indent=2, sort_keys=True))
        client.log_artifact(run_id, str(path))
    client.set_terminated(
        run_id, SWEEP_RUN_STATUS.get(sweep.status, "FINISHED"), end_time=_ms(sweep.finished_at)
    )
    _update_sweep(settings, sweep.id, mlflow_synced_status=sweep.status)


def mirror_sweep(
    settings: Any, sweep_id: str, *, finalize: bool = True, client: Any = None
) -> tuple[str, str]:
    """Create the sweep's parent run once; with ``finalize``, close it when the sweep is over.

    The parent is closed (best trial's params and objective, the learning-rate
    plot, status) only once the sweep has ended and every trial's run is final.
    Returns (parent run id, experiment id). Raises MirrorBusy.
    """
    client = client or _client(settings)
    with _mirror_lock(settings, f"sweep:{sweep_id}"):
        with session_scope(settings) as session:
            sweep = _load_sweep(session, sweep_id)
        if sweep is None:
            raise LookupError(f"sweep {sweep_id} not found")
        exp_id = sweep.mlflow_experiment_id or _experiment_id(
            client, settings.mlflow_tracking_uri, sweep.experiment
        )
        run_id = sweep.mlflow_run_id
        if run_id is None:
            run_id = _find_run(client, exp_id, "sweeplab.sweep_id", sweep.id, "sweep")
            if run_id is None:
                run = client.create_run(
                    exp_id,
                    start_time=_ms(sweep.created_at),
                    run_name=sweep.name or f"sweep {sweep.id[:8]}",
                    tags={
                        "sweeplab.kind": "sweep",
                        "sweeplab.sweep_id": sweep.id,
                        "sweeplab.status": sweep.status,
                        "sweeplab.method": sweep.method,
                    },
                )
                run_id = run.info.run_id
                client.log_batch(run_id, params=_params(_sweep_params(sweep)), synchronous=True)
            _update_sweep(settings, sweep.id, mlflow_run_id=run_id, mlflow_experiment_id=exp_id)
        if finalize and sweep.status in SWEEP_RUN_STATUS and sweep.synced_status != sweep.status:
            trials = _sweep_trials(settings, sweep_id)
            # Trials that never ran (cancelled while queued, invalid) get no
            # job_finished: mirror them here. Raises MirrorBusy if one is held.
            for t in trials:
                if t["status"] in TERMINAL and t["synced_status"] != t["status"]:
                    mirror_job(settings, t["id"], client=client, then_sweep=False)
            trials = _sweep_trials(settings, sweep_id)
            if all(t["status"] in TERMINAL and t["synced_status"] == t["status"] for t in trials):
                _finalize_sweep(settings, client, sweep, run_id, trials)
    return run_id, exp_id


def job_sweep_id(settings: Any, job_id: str) -> str | None:
    """Return the sweep a job belongs to (None for a single job or an unknown id)."""
    from services.db import Job

    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        return job.sweep_id if job is not None else None


def sweep_mirror_final(settings: Any, sweep_id: str) -> bool | None:
    """Return True when the sweep's mirror is closed, False when it should be, None if not yet.

    None means the sweep still runs trials (a later trial's end brings us back).
    False means the sweep has ended, or is about to (every trial is final and
    none is left to create), but its parent run is not closed yet.
    """
    from sqlalchemy import select

    from services.db import Job, Sweep

    with session_scope(settings) as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return True
        if sweep.status in SWEEP_RUN_STATUS:
            return sweep.mlflow_synced_status == sweep.status
        statuses = list(session.scalars(select(Job.status).where(Job.sweep_id == sweep_id)))
        if sweep.n_created >= sweep.n_trials and all(s in TERMINAL for s in statuses):
            return False
        return None


# --------------------------------------------------------------------------- catching up


def lagging(settings: Any, limit: int = 500) -> tuple[list[str], list[str]]:
    """Return the ids of jobs and sweeps whose mirror is behind the database."""
    from sqlalchemy import and_, or_, select

    from services.db import Job, Sweep

    with session_scope(settings) as session:
        jobs = session.scalars(
            select(Job.id)
            .where(
                or_(
                    and_(
                        Job.status.in_(TERMINAL),
                        or_(
                            Job.mlflow_synced_status.is_(None),
                            Job.mlflow_synced_status != Job.status,
                        ),
                    ),
                    and_(Job.status == "running", Job.mlflow_synced_epoch < Job.epochs_done),
                )
            )
            .order_by(Job.created_at)
            .limit(limit)
        ).all()
        sweeps = session.scalars(
            select(Sweep.id)
            .where(
                Sweep.status.in_(list(SWEEP_RUN_STATUS)),
                or_(
                    Sweep.mlflow_synced_status.is_(None),
                    Sweep.mlflow_synced_status != Sweep.status,
                ),
            )
            .order_by(Sweep.created_at)
            .limit(limit)
        ).all()
        session.rollback()
    return list(jobs), list(sweeps)


def mirror_pending(settings: Any, limit: int = 500) -> dict[str, int]:
    """Mirror every job and sweep that lags; return counts (done, busy, failed, left)."""
    counts = {"done": 0, "busy": 0, "failed": 0, "left": 0}
    if not enabled(settings):
        return counts
    job_ids, sweep_ids = lagging(settings, limit)
    work = [("job", j) for j in job_ids] + [("sweep", s) for s in sweep_ids]
    for kind, item in work:
        try:
            if kind == "job":
                mirror_job(settings, item, finalize=True)
            else:
                mirror_sweep(settings, item, finalize=True)
            counts["done"] += 1
        except MirrorBusy:
            counts["busy"] += 1
        except Exception:
            counts["failed"] += 1
            log.warning("mirror of %s %s failed", kind, item, exc_info=True)
            if not is_up(settings):
                break  # MLflow is down: do not spend a timeout on every item
    job_ids, sweep_ids = lagging(settings, limit)
    counts["left"] = len(job_ids) + len(sweep_ids)
    return counts


def is_up(settings: Any, timeout: float = 2.0) -> bool:
    """Return True when the MLflow server answers its health check."""
    import urllib.request

    try:
        url = settings.mlflow_tracking_uri.rstrip("/") + "/health"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- the hooks


class _Mirrorer:
    """A daemon thread in a training process that mirrors dirty jobs in the background."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.dirty: dict[str, Any] = {}
        self.first_seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.backoff = 0.0
        self.thread = threading.Thread(target=self._run, name="sweeplab-mlflow-mirror", daemon=True)
        self.thread.start()

    def note(self, settings: Any, job_id: str) -> None:
        with self.lock:
            self.dirty[job_id] = settings
            self.first_seen.setdefault(job_id, time.monotonic())
        self.wake.set()

    def forget(self, job_id: str) -> float:
        """Drop the job; return how long ago its first progress was noted."""
        with self.lock:
            self.dirty.pop(job_id, None)
            since = self.first_seen.pop(job_id, None)
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        while True:
            self.wake.wait()
            # Wait one interval before a pass: it batches the notes of several
            # flushes, and a job that ends meanwhile is left to mirror_job (a
            # short job then costs its training process nothing at all).
            time.sleep(MIRROR_INTERVAL)
            self.wake.clear()
            with self.lock:
                work, self.dirty = self.dirty, {}
            failed = False
            for job_id, settings in work.items():
                try:
                    mirror_job(settings, job_id, finalize=False)
                except MirrorBusy:
                    pass  # someone else is on it; a later note brings us back
                except Exception as exc:
                    failed = True
                    log.info("MLflow mirror of job %s deferred: %s", job_id, exc)
                    with self.lock:
                        self.dirty.setdefault(job_id, settings)
            if failed:
                self.backoff = min(max(self.backoff * 2, DOWN_BACKOFF[0]), DOWN_BACKOFF[1])
                time.sleep(self.backoff * (0.75 + 0.5 * random.random()))
                self.wake.set()
            else:
                self.backoff = 0.0


_mirrorer: _Mirrorer | None = None


def _background() -> _Mirrorer:
    global _mirrorer
    if _mirrorer is None or _mirrorer.pid != os.getpid():  # a forked child starts its own
        with _plumbing_lock:
            if _mirrorer is None or _mirrorer.pid != os.getpid():
                _mirrorer = _Mirrorer()
    return _mirrorer


def job_progressed(settings: Any, job_id: str) -> None:
    """Note that a job has new committed epochs; returns at once (a thread mirrors)."""
    if enabled(settings):
        _background().note(settings, job_id)


def job_finished(settings: Any, job_id: str) -> None:
    """Hand the finished job to the ``sweeplab.mirror_job`` task; returns at once.

    Sending the message needs Redis only; a failure to send is logged, and the
    periodic ``sweeplab.mirror_pending`` task picks the job up later.
    """
    if not enabled(settings):
        return
    ran = 0.0
    if _mirrorer is not None and _mirrorer.pid == os.getpid():
        ran = _mirrorer.forget(job_id)
    try:
        send_task(
            settings, MIRROR_JOB_TASK, [job_id], priority=0 if ran >= LONG_JOB_S else LOW_PRIORITY
        )
    except Exception:
        log.warning("could not enqueue the MLflow mirror of job %s", job_id, exc_info=True)
