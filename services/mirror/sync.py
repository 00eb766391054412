"""The sync protocol: bring a job's run, and a sweep's parent run, up to date
with the database, exactly once (see the package's docstring)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from services.db.models import TERMINAL_STATUSES as TERMINAL
from services.mirror.entities import (
    _experiments,
    experiment_id_for,
    find_run,
    job_tags,
    marked_best,
    run_artifacts,
    run_params,
    run_tags,
    sweep_params,
)
from services.mirror.models import BEST_TRIAL_TAG, mark_if_best, model_tags, settle_best
from services.mirror.names import (
    RUN_STATUS,
    SWEEP_RUN_STATUS,
    enabled,
    epoch_metrics,
    experiment_name,
    flatten_spec,
    run_name,
    to_ms,
)
from services.mirror.plumbing import MirrorBusy, mirror_lock, mlflow_client, session_scope
from services.mirror.snapshots import (
    JobSnapshot,
    SweepSnapshot,
    load_job,
    load_sweep,
    objective_key,
    sweep_size,
    sweep_trials,
    update_job,
    update_sweep,
)

log = logging.getLogger(__name__)


SYNC_KEY = "seconds"  # present in every epoch record: its last step = last epoch mirrored


# MLflow's limits (mlflow/utils/validation.py): params and tags 100 per request
# (the client splits), metrics 1000 per request, param values 6000 characters.
MAX_METRICS_PER_REQUEST = 1000


# run id -> last epoch this process knows reached MLflow (absent: not sure)
_confirmed: dict[str, int] = {}


def _ensure_job_run(settings: Any, client: Any, snap: JobSnapshot) -> tuple[str, bool]:
    """Return the job's run id, creating the run (and its sweep's parent) once.

    The flag is True when the run was created just now (nothing logged to it yet).
    """
    if snap.mlflow_run_id:
        return snap.mlflow_run_id, False
    parent_run_id = None
    if snap.sweep_id:
        with session_scope(settings) as session:
            sweep = load_sweep(session, snap.sweep_id)
        if sweep is not None and sweep.mlflow_run_id and sweep.mlflow_experiment_id:
            parent_run_id, exp_id = sweep.mlflow_run_id, sweep.mlflow_experiment_id
        else:
            parent_run_id, exp_id = mirror_sweep(
                settings, snap.sweep_id, client=client, finalize=False
            )
    else:
        exp_id = experiment_id_for(
            client, settings.mlflow_tracking_uri, experiment_name(snap.spec.get("experiment"))
        )
    run_id = find_run(client, exp_id, "sweeplab.job_id", snap.id, "job")
    fresh = run_id is None
    if run_id is None:
        try:
            run = client.create_run(
                exp_id,
                start_time=to_ms(snap.started_at or snap.created_at),
                tags={k: str(v) for k, v in job_tags(snap, parent_run_id).items() if v is not None},
                run_name=run_name(snap.spec, snap.params),
            )
        except Exception:
            _experiments.clear()  # the experiment may have gone: look it up afresh next time
            raise
        run_id = run.info.run_id
        if snap.synced_epoch:  # a new run holds nothing, whatever the row said
            with session_scope(settings) as session:
                snap.epochs = load_job(session, snap.id, after_epoch=0).epochs  # type: ignore[union-attr]
            snap.synced_epoch = 0
    values = {"mlflow_run_id": run_id, "mlflow_experiment_id": exp_id}
    if fresh:
        values["mlflow_synced_epoch"] = 0
    update_job(settings, snap.id, force=True, **values)
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
    final_metrics: Sequence[Any] = (),
) -> None:
    """Log every epoch after the last one MLflow has, whole epochs per request.

    The params ride along in the first request when the run is new (``fresh``)
    or this process is not sure of it, and ``tags`` and ``final_metrics`` in the
    last one: a short job's whole run is then one create and one ``log_batch``.
    """
    from mlflow.entities import Metric  # late: heavy (mlflow)

    done = snap.synced_epoch
    params: list[Any] = []
    if fresh:
        _confirmed[run_id] = done
    if _confirmed.get(run_id) != done:
        # Not sure what reached MLflow (new process, or a request that failed
        # after the server may have stored it): ask MLflow. Params are
        # idempotent (same key, same value), so they may be sent again.
        done = max(done, _last_logged_epoch(client, run_id))
        params = run_params(flatten_spec(snap.spec))
    elif fresh:
        params = run_params(flatten_spec(snap.spec))
    final_tags = run_tags(tags or {})
    # Keep every metric of a request in the first of the client's chunks (it
    # sends at most 100 params and 100 tags, then fills up to 1000 entities).
    budget = MAX_METRICS_PER_REQUEST - min(len(params), 100) - min(len(final_tags), 100)
    budget -= len(final_metrics)
    batch: list[Any] = []
    batch_last = done

    def flush(last: bool) -> None:
        nonlocal batch, done, params
        extra = final_tags if last else []
        if last:
            batch.extend(final_metrics)
        if batch or params or extra:
            _confirmed.pop(run_id, None)
            client.log_batch(run_id, metrics=batch, params=params, tags=extra, synchronous=True)
            batch, params = [], []
        if batch_last > snap.synced_epoch:
            update_job(settings, snap.id, mlflow_synced_epoch=batch_last)
            snap.synced_epoch = batch_last
        done = batch_last
        _confirmed[run_id] = done

    fallback_ms = to_ms(snap.started_at or snap.created_at) or int(time.time() * 1000)
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


def _best_metric(settings: Any, snap: JobSnapshot) -> list[Any]:
    """The number the job is ranked by, as ``best_<metric>``, so that MLflow's compare
    view sorts trials as the API's leaderboard does (the per-epoch metrics end at
    the last epoch). Its timestamp and step come from the row: a pass that is redone
    logs the very same point, which MLflow stores once."""
    from mlflow.entities import Metric  # late: heavy (mlflow)

    with session_scope(settings) as session:
        key = objective_key(session, snap.id)
    value = snap.objective
    if not key or value is None or not math.isfinite(value):
        return []
    stamp = to_ms(snap.finished_at) or to_ms(snap.started_at) or to_ms(snap.created_at) or 0
    return [Metric(f"best_{key}", float(value), stamp, snap.best_epoch or 0)]


def _finalize_job(settings: Any, client: Any, snap: JobSnapshot, run_id: str) -> None:
    with session_scope(settings) as session:
        full = load_job(session, snap.id, after_epoch=0)
        snap.sweep_size = sweep_size(session, snap.sweep_id)  # for the PNG's rule
    history = [{"epoch": e, **rec} for e, _, rec in (full.epochs if full else [])]
    if full is not None and full.result:
        snap.result = full.result
    with tempfile.TemporaryDirectory(prefix="sweeplab-mirror-") as tmp:
        for name, data in run_artifacts(settings, snap, history).items():
            Path(tmp, name).parent.mkdir(parents=True, exist_ok=True)  # model/... too
            Path(tmp, name).write_bytes(data)
        client.log_artifacts(run_id, tmp)
    client.set_terminated(run_id, RUN_STATUS[snap.status], end_time=to_ms(snap.finished_at))
    update_job(settings, snap.id, mlflow_synced_status=snap.status)
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
    client = client or mlflow_client(settings)
    with mirror_lock(settings, f"job:{job_id}"):
        with session_scope(settings) as session:
            snap = load_job(session, job_id, after_epoch=None)
        if snap is None:
            return True
        if snap.status == "queued" and not snap.epochs:
            return True
        if snap.synced_status == snap.status and snap.status in TERMINAL and not snap.epochs:
            return True
        run_id, fresh = _ensure_job_run(settings, client, snap)
        final = finalize and snap.status in TERMINAL and snap.synced_status != snap.status
        tags = job_tags(snap, None) if final else None
        if tags is not None:  # a succeeded job's run lists its MLflow model
            tags.update(model_tags(snap, run_id))
        best = _best_metric(settings, snap) if final else []
        _log_epochs(settings, client, snap, run_id, fresh=fresh, tags=tags, final_metrics=best)
        if snap.status not in TERMINAL:
            return True
        if not finalize:
            return False
        if final:
            _finalize_job(settings, client, snap, run_id)
            try:
                mark_if_best(settings, client, snap, run_id)
            except Exception:  # the sweep's final pass settles the marks
                log.warning("cannot mark the best trial for job %s", snap.id, exc_info=True)
    if snap.sweep_id and then_sweep:
        with contextlib.suppress(MirrorBusy):  # the holder, or mirror_pending, finishes it
            mirror_sweep(settings, snap.sweep_id, client=client, finalize=True)
    return True


def _finalize_sweep(
    settings: Any, client: Any, sweep: SweepSnapshot, run_id: str, trials: list[dict[str, Any]]
) -> None:
    from mlflow.entities import Metric  # late: heavy (mlflow)

    counts: dict[str, int] = {}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    tags: dict[str, Any] = {
        "sweeplab.status": sweep.status,
        "sweeplab.counts": json.dumps(counts, sort_keys=True),
    }
    best = marked_best(trials)
    params: dict[str, str] = {}
    metrics = []
    if best is not None:
        tags.update(
            {
                BEST_TRIAL_TAG: best["id"],
                "sweeplab.best_job_id": best["id"],
                "sweeplab.best_run_id": best["run_id"],
                "sweeplab.best_trial_index": best["trial_index"],
                "sweeplab.best_run_name": run_name(best["spec"], best["params"]),
            }
        )
        parent = client.get_run(run_id)
        # A resumed or extended sweep ends again, perhaps with another best trial: MLflow
        # refuses to change a param, so the first best's params stay (the tags above
        # name the best now) and the best value is logged again only if it changed.
        logged = parent.data.params
        params = {k: v for k, v in flatten_spec(best["spec"]).items() if k not in logged}
        existing = parent.data.metrics
        key = f"best_{sweep.objective_metric}"
        if existing.get(key) != float(best["objective"]):  # once, even if this pass is redone
            stamp = to_ms(sweep.finished_at) or int(time.time() * 1000)
            metrics = [Metric(key, float(best["objective"]), stamp, 0)]
    client.log_batch(
        run_id, metrics=metrics, params=run_params(params), tags=run_tags(tags), synchronous=True
    )
    if best is not None:  # only the best trial's run says sweeplab.best=true
        settle_best(client, parent.info.experiment_id, run_id, best)
    # The LR map (PNG and its data) and the report page, drawn from the database as the
    # API draws them; sweep.json, the sweep as submitted.
    from services.mirror.sweep_artifacts import sweep_files  # late: heavy (matplotlib, optuna)

    files = sweep_files(settings, sweep.id)
    files["sweep.json"] = json.dumps(sweep.spec, indent=2, sort_keys=True).encode()
    with tempfile.TemporaryDirectory(prefix="sweeplab-mirror-") as tmp:
        for name, data in files.items():
            Path(tmp, name).write_bytes(data)
        client.log_artifacts(run_id, tmp)
    client.set_terminated(
        run_id, SWEEP_RUN_STATUS.get(sweep.status, "FINISHED"), end_time=to_ms(sweep.finished_at)
    )
    update_sweep(settings, sweep.id, mlflow_synced_status=sweep.status)


def mirror_sweep(
    settings: Any,
    sweep_id: str,
    *,
    finalize: bool = True,
    client: Any = None,
    lagging_trials: Callable[[list[str]], None] | None = None,
) -> tuple[str, str]:
    """Create the sweep's parent run once; with ``finalize``, close it when the sweep is over.

    The parent is closed (best trial's params and objective, the learning-rate
    plot, status) only once the sweep has ended and every trial's run is final.
    Trials whose final state MLflow lacks are mirrored here, one after another,
    unless ``lagging_trials`` is given: it is handed their ids instead (so that
    both worker processes share them) and the parent stays open for now.
    Returns (parent run id, experiment id). Raises MirrorBusy.
    """
    client = client or mlflow_client(settings)
    with mirror_lock(settings, f"sweep:{sweep_id}"):
        with session_scope(settings) as session:
            sweep = load_sweep(session, sweep_id)
        if sweep is None:
            raise LookupError(f"sweep {sweep_id} not found")
        exp_id = sweep.mlflow_experiment_id or experiment_id_for(
            client, settings.mlflow_tracking_uri, sweep.experiment
        )
        run_id = sweep.mlflow_run_id
        if run_id is None:
            run_id = find_run(client, exp_id, "sweeplab.sweep_id", sweep.id, "sweep")
            if run_id is None:
                run = client.create_run(
                    exp_id,
                    start_time=to_ms(sweep.created_at),
                    run_name=sweep.name or f"sweep {sweep.id[:8]}",
                    tags={
                        "sweeplab.kind": "sweep",
                        "sweeplab.sweep_id": sweep.id,
                        "sweeplab.status": sweep.status,
                        "sweeplab.method": sweep.method,
                    },
                )
                run_id = run.info.run_id
                client.log_batch(run_id, params=run_params(sweep_params(sweep)), synchronous=True)
            update_sweep(settings, sweep.id, mlflow_run_id=run_id, mlflow_experiment_id=exp_id)
        if finalize and sweep.status in SWEEP_RUN_STATUS and sweep.synced_status != sweep.status:
            trials = sweep_trials(settings, sweep_id)
            # Trials that never ran (cancelled while queued, invalid) get no
            # job_finished: mirror them here. Raises MirrorBusy if one is held.
            behind = [
                t["id"]
                for t in trials
                if t["status"] in TERMINAL and t["synced_status"] != t["status"]
            ]
            if behind and lagging_trials is not None:
                lagging_trials(behind)
                return run_id, exp_id
            for job_id in behind:
                mirror_job(settings, job_id, client=client, then_sweep=False)
            trials = sweep_trials(settings, sweep_id)
            if all(t["status"] in TERMINAL and t["synced_status"] == t["status"] for t in trials):
                _finalize_sweep(settings, client, sweep, run_id, trials)
    return run_id, exp_id
