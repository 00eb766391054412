"""The MLflow mirror: names and links, the sync protocol, the background catch-up.

It copies jobs and sweeps from the database to MLflow, exactly once.

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

Modules

    names      params, metrics, run names, links: pure functions
    links      the MLflow links the API shows
    plumbing   per-process clients, sessions, Redis locks, task sending
    snapshots  what a pass reads from (and writes back to) the database
    entities   experiments, runs, tags, params, artifacts on the MLflow side
    sync       mirror_job / mirror_sweep: the protocol
    catch_up   the hooks, the background thread, mirror_pending
    server     a local MLflow server that starts fast and stays small
"""
