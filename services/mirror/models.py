"""Trained models in MLflow: each succeeded job's run holds an MLflow model (pyfunc,
models from code), and a sweep's best trial is marked on its parent run.

The model (``runs:/<run_id>/model``) is built by hand, without MLflow's environment
inference (which imports and inspects packages, ~0.25 s the first time): five small
files that ride in the job's one final ``log_artifacts`` call::

    model/MLmodel                the pyfunc flavor, loaded by mlflow.pyfunc.loaders.code_model
    model/model.py               services/mirror/pyfunc_model.py: NumPy only, no sweeplab
    model/artifacts/job.npz      what GET /jobs/<id>/weights answers
    model/requirements.txt       mlflow, numpy, pandas (the versions that wrote it)
    model/python_env.yaml        for ``mlflow models serve`` with a virtualenv

Measured (a local server, moons 2-16-2): building the files ~0.9 ms a job (the
weights parsed, the download written, MLmodel by libyaml); uploading them adds ~18 ms
to the job's final ``log_artifacts`` (five more PUTs at ~3.5 ms), in the low-priority
mirror task, never in the training.

A sweep's best trial (``services.ranking.best_trial``, as the API picks it): when a
finished trial is the best so far, its parent run gets ``sweeplab.best_trial_id``
and ``sweeplab.best_run_id``, the trial's run ``sweeplab.best=true`` and the run
marked before ``sweeplab.best=false``. Passes of trials that end together may
race; the sweep's final pass settles the marks under the sweep's lock.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from services.datasets import fit_data
from services.db import Sweep
from services.mirror.plumbing import session_factory_for, session_scope
from services.mirror.snapshots import JobSnapshot
from services.models import trained_model
from services.ranking import best_trial_in, leaderboard_page

log = logging.getLogger(__name__)

DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ~5x faster
MODEL_DIR = "model"
CODE = Path(__file__).with_name("pyfunc_model.py")
HISTORY_TAG = "mlflow.log-model.history"
BEST_TAG, BEST_TRIAL_TAG, BEST_RUN_TAG = (
    "sweeplab.best",
    "sweeplab.best_trial_id",
    "sweeplab.best_run_id",
)


@functools.cache
def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


@functools.cache
def _static_files() -> dict[str, bytes]:
    """The files that are the same for every job (read and written once a process)."""
    env = {
        "python": platform.python_version(),
        "build_dependencies": ["pip"],
        "dependencies": ["-r requirements.txt"],
    }
    return {
        f"{MODEL_DIR}/model.py": CODE.read_bytes(),
        f"{MODEL_DIR}/requirements.txt": "\n".join(requirements()).encode(),
        f"{MODEL_DIR}/python_env.yaml": yaml.safe_dump(env, sort_keys=False).encode(),
    }


def requirements() -> list[str]:
    """What loading the model needs: mlflow, numpy and pandas, as installed here."""
    out = []
    for package in ("mlflow", "numpy", "pandas"):
        version = _version(package)
        out.append(f"{package}=={version}" if version else package)
    return out


def _flavors() -> dict[str, Any]:
    return {
        "python_function": {
            "artifacts": {"job": {"path": "artifacts/job.npz", "uri": "job.npz"}},
            "code": None,
            "env": {"virtualenv": "python_env.yaml"},
            "loader_module": "mlflow.pyfunc.loaders.code_model",
            "model_code_path": "model.py",
            "python_version": platform.python_version(),
            "streamable": False,
        }
    }


def model_files(job_id: str, run_id: str | None, npz: bytes, created: str) -> dict[str, bytes]:
    """The files of the model directory (names relative to the run's artifact root)."""
    static = _static_files()
    mlmodel = {
        "artifact_path": MODEL_DIR,
        "flavors": _flavors(),
        "mlflow_version": _version("mlflow"),
        "model_size_bytes": len(npz) + len(static[f"{MODEL_DIR}/model.py"]),
        "model_uuid": job_id,
        "run_id": run_id,
        "utc_time_created": created,
    }
    return {
        f"{MODEL_DIR}/MLmodel": yaml.dump(mlmodel, Dumper=DUMPER).encode(),
        f"{MODEL_DIR}/artifacts/job.npz": npz,
        **static,
    }


def model_tags(snap: JobSnapshot, run_id: str) -> dict[str, str]:
    """The run's tag that lists its logged models, as MLflow's own ``log_model`` sets it
    (the UI's runs table shows the model from it); a succeeded job's only."""
    if snap.status != "succeeded":
        return {}
    entry = {
        "run_id": run_id,
        "artifact_path": MODEL_DIR,
        "utc_time_created": snap.finished_at.isoformat() if snap.finished_at else "",
        "flavors": _flavors(),
        "model_uuid": snap.id,
    }
    return {HISTORY_TAG: json.dumps([entry])}


def job_model_files(settings: Any, snap: JobSnapshot, blob: bytes) -> dict[str, bytes]:
    """The model files of a succeeded job whose final weights are ``blob``; none for
    any other job (or when the model cannot be built: logged, the run goes on)."""
    if snap.status != "succeeded":
        return {}
    try:
        model = trained_model(
            snap.spec, blob, lambda: fit_data(snap.spec, session_factory_for(settings), settings)
        )
        created = (snap.finished_at.isoformat() if snap.finished_at else "") or ""
        return model_files(snap.id, snap.mlflow_run_id, model.npz_bytes(), created)
    except Exception:
        log.exception("cannot build the MLflow model of job %s", snap.id)
        return {}


# -- the best trial ---------------------------------------------------------------------


def current_best(settings: Any, sweep_id: str) -> tuple[str, str | None] | None:
    """(job id, parent run id) of the sweep's best trial now, read in one short query."""
    with session_scope(settings) as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return None
        found = best_trial_in(session, sweep, leaderboard_page(session, sweep, limit=10))
        best = None if found is None else (found[0].id, sweep.mlflow_run_id)
        session.rollback()
    return best


def mark_if_best(settings: Any, client: Any, snap: JobSnapshot, run_id: str) -> bool:
    """After a trial's final pass: if it is its sweep's best now, mark it (see the
    module's docstring). True if it was marked."""
    if not snap.sweep_id or snap.status != "succeeded":
        return False
    found = current_best(settings, snap.sweep_id)
    if found is None or found[0] != snap.id or not found[1]:
        return False
    parent = found[1]
    before = client.get_run(parent).data.tags.get(BEST_RUN_TAG)
    if before == run_id:
        return True
    set_best(client, parent, snap.id, run_id, before)
    return True


def set_best(client: Any, parent_run_id: str, job_id: str, run_id: str, before: str | None) -> None:
    """Mark ``run_id`` (of trial ``job_id``) as the best on its parent and itself;
    unmark the run marked ``before``."""
    from mlflow.entities import RunTag  # late: heavy (mlflow)

    client.set_tag(run_id, BEST_TAG, "true")
    tags = [RunTag(BEST_TRIAL_TAG, job_id), RunTag(BEST_RUN_TAG, run_id)]
    client.log_batch(parent_run_id, tags=tags, synchronous=True)
    if before and before != run_id:
        client.set_tag(before, BEST_TAG, "false")


def settle_best(
    client: Any, experiment_id: str, parent_run_id: str, best: dict[str, Any] | None
) -> None:
    """The sweep's final pass: only the best trial's run says ``sweeplab.best=true``."""
    from mlflow.entities import ViewType  # late: heavy (mlflow)

    marked = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{BEST_TAG}` = 'true'"
        ),
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1000,
    )
    keep = best["run_id"] if best is not None else None
    for run in marked:
        if run.info.run_id != keep:
            client.set_tag(run.info.run_id, BEST_TAG, "false")
    if best is not None and keep:
        client.set_tag(keep, BEST_TAG, "true")
