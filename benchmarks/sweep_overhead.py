"""Per-trial service overhead: a grid sweep of tiny trials through the real stack vs a bare Pool.

    .venv/bin/python benchmarks/sweep_overhead.py                 # 500 trials, SQLite
    .venv/bin/python benchmarks/sweep_overhead.py --quick         # 100 trials
    .venv/bin/python benchmarks/sweep_overhead.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/sweep_overhead.py --mlflow        # with the MLflow mirror on
    .venv/bin/python benchmarks/sweep_overhead.py --packing auto  # tiny trials packed (issue 15)

What it measures (issue 12, "Per-trial overhead"):

- service: a grid sweep of N tiny trials (xor, 2 epochs: microseconds of training
  each) submitted through the Flask app in-process, trained by one Celery worker
  with 2 processes on a private Redis server; wall time from the submission to the
  sweep's ``finished_at``. SQLite first, then (``--postgres``) a throwaway database on
  that PostgreSQL server, dropped at the end.
- bare: the same N ``fit`` calls (the trials' stored specs) in a warmed-up
  ``multiprocessing.Pool(2)``, the dataset loaded once in the parent.
- overhead per trial per worker process = (service - bare) / N * 2.
- broker round trips for reference: Redis PING, LPUSH+BRPOP, kombu put+get,
  Celery ``send_task`` (``Dispatcher.enqueue_jobs`` of one id).
- where a trial's time goes in a worker process: ``execute_job`` run in this
  process over a sweep of tiny trials (a dispatcher that sends for real, to a queue
  nobody consumes, and hands the ids to the loop), with a timer around each phase
  (claim, checkpoint load, dataset load, fit, epoch flushes, finish, the sweep
  scheduler, mirror hooks, commits): exclusive ms per trial per phase; then the
  same under cProfile, top entries by cumulative time.

Everything it starts (Redis, the worker, MLflow, the PostgreSQL database) is
stopped or dropped whatever happens; ``--timeout`` bounds the whole run.

One script (over the house's 400 lines) so that it runs alone: the measurement, the
bare Pool and the per-phase profile; what other benchmarks share is in ``support.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import multiprocessing
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from datetime import timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from sqlalchemy import func, or_, select  # noqa: E402

from api import create_app  # noqa: E402
from benchmarks.support import (  # noqa: E402
    create_pg_database,
    drop_pg_database,
    free_port,
    start_worker,
    stop_workers,
    tiny_trial,
    wait_for,
)
from services.celery_app import Dispatcher  # noqa: E402
from services.config import Settings  # noqa: E402
from services.db import make_engine, make_session_factory, upgrade  # noqa: E402
from services.db.models import Job, Sweep  # noqa: E402
from services.stack.processes import start_redis  # noqa: E402
from tests.auth_support import authorize, new_token  # noqa: E402

PROCESSES = 2
REDIS_PID: list[int] = []  # the private Redis server, for its CPU time


def cpu_seconds(worker_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the worker's main process, its pool processes, our Redis,
    every PostgreSQL server process on the machine, and this process (API, polling)."""
    import psutil

    def cpu(proc: Any) -> float:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            return t.user + t.system
        return 0.0

    out = {"worker main process": 0.0, "worker pool processes": 0.0}
    if worker_pid is not None:
        main = psutil.Process(worker_pid)
        out["worker main process"] = cpu(main)
        out["worker pool processes"] = sum(cpu(c) for c in main.children(recursive=True))
    out["redis-server"] = sum(cpu(psutil.Process(pid)) for pid in REDIS_PID)
    out["postgres (all its processes)"] = sum(
        cpu(proc) for proc in psutil.process_iter(["name"]) if proc.info["name"] == "postgres"
    )
    out["this process (API, polling)"] = cpu(psutil.Process())
    return out


# --------------------------------------------------------------------------- the trials


#: "off": every trial runs alone, the per-trial path the overhead is about; "auto" lets
#: the scheduler pack these tiny trials (issue 15), for comparison (--packing auto).
PACKING = "off"


def sweep_body(n: int, epochs: int, n_samples: int, concurrency: int, name: str) -> dict[str, Any]:
    lrs = [round(10 ** (-3 + 3 * i / max(n - 1, 1)), 8) for i in range(n)]
    # reuse off: a trial identical to an earlier sweep's would be copied, not trained
    base = {**tiny_trial("overhead", epochs, n_samples), "reuse": False}
    return {
        "name": name,
        "base": base,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": lrs}},
        "max_concurrency": concurrency,
        "packing": PACKING,
    }


# --------------------------------------------------------------------------- the bare Pool

_DATA: Any = None


def _fit(spec: dict[str, Any]) -> float:
    from services.trainer import fit

    return fit(spec, data=_DATA).seconds


def bare_pool(specs: list[dict[str, Any]]) -> tuple[float, float]:
    """(wall, summed fit seconds) of Pool(2).map(fit, specs), dataset loaded once, pool warm."""
    global _DATA
    from services.trainer import load_dataset, parse_spec

    _DATA = load_dataset(parse_spec(specs[0]).dataset)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(PROCESSES) as pool:
        pool.map(_fit, specs[: 4 * PROCESSES], chunksize=1)  # warm both processes
        start = time.perf_counter()
        seconds = pool.map(_fit, specs, chunksize=1)
        wall = time.perf_counter() - start
    return wall, sum(seconds)


# --------------------------------------------------------------------------- the service


class Service:
    """A database, the API in-process, one Celery worker with 2 processes."""

    def __init__(self, root: Path, database_url: str, redis_url: str, mlflow_url: str):
        self.root = root
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MLFLOW_TRACKING_URI": mlflow_url,
            "SWEEPLAB_QUEUE": f"overhead-{uuid.uuid4().hex[:8]}",
            "SWEEPLAB_BLAS_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        upgrade(database_url)
        self.settings = Settings.from_env(self.env)
        self.engine = make_engine(database_url)
        self.sessions = make_session_factory(self.engine)
        self.app = create_app(self.settings)
        self.client = authorize(self.app.test_client(), new_token(self.sessions))
        self.worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        queue = self.settings.celery_queue
        log = self.root / f"worker-{uuid.uuid4().hex[:4]}.log"
        self.worker = start_worker(self.env, queue, log, f"overhead-{queue}", PROCESSES)

    def stop_worker(self) -> None:
        if self.worker is not None:
            stop_workers([self.worker])
            self.worker = None

    def close(self) -> None:
        self.stop_worker()
        self.app.extensions["sweeplab"].dispatcher.close()
        self.app.extensions["sweeplab"].engine.dispose()
        self.engine.dispose()

    def submit(self, body: dict[str, Any]) -> str:
        response = self.client.post("/api/v1/sweeps", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def wait_sweep(self, sweep_id: str, timeout: float) -> Sweep:
        def done() -> Sweep | None:
            with self.sessions() as session:
                sweep = session.get(Sweep, sweep_id)
                session.commit()
            return sweep if sweep is not None and sweep.status != "running" else None

        return wait_for(done, timeout, f"sweep {sweep_id}", interval=0.5)

    def trials(self, sweep_id: str) -> list[Job]:
        with self.sessions() as session:
            stmt = select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_index)
            jobs = list(session.scalars(stmt))
            session.commit()
        return jobs

    def mirrored(self, sweep_id: str, timeout: float) -> float:
        """Wait until MLflow has the sweep's parent run and every trial's final state;
        returns when (``time.time()``); a no-op without MLflow."""
        if not self.settings.mlflow_tracking_uri:
            return time.time()

        def done() -> bool:
            with self.sessions() as session:
                sweep = session.get(Sweep, sweep_id)
                lagging = session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(
                        Job.sweep_id == sweep_id,
                        or_(
                            Job.mlflow_synced_status.is_(None),
                            Job.mlflow_synced_status != Job.status,
                        ),
                    )
                )
                session.commit()
            return sweep is not None and sweep.mlflow_synced_status == sweep.status and not lagging

        wait_for(done, timeout, f"the MLflow mirror of sweep {sweep_id}", interval=0.25)
        return time.time()

    def run_sweep(self, body: dict[str, Any], timeout: float) -> tuple[float, list[Job]]:
        """Submit; (seconds from submission to the sweep's finished_at, its trials)."""
        start = time.time()
        sweep_id = self.submit(body)
        self.last_sweep_id = sweep_id
        sweep = self.wait_sweep(sweep_id, timeout)
        finished = sweep.finished_at
        assert finished is not None
        if finished.tzinfo is None:
            finished = finished.replace(tzinfo=timezone.utc)
        return finished.timestamp() - start, self.trials(sweep_id)


# --------------------------------------------------------------------------- round trips


def median_ms(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def round_trips(settings: Settings) -> list[tuple[str, float]]:
    import redis

    r = redis.Redis.from_url(settings.redis_url)
    key = f"overhead:rt:{uuid.uuid4().hex[:6]}"

    def push_pop() -> None:
        r.lpush(key, b"x")
        r.brpop([key], timeout=5)

    scratch = Settings.from_env(
        {"REDIS_URL": settings.redis_url, "SWEEPLAB_QUEUE": f"scratch-{uuid.uuid4().hex[:6]}"}
    )
    dispatcher = Dispatcher(scratch)
    dispatcher.enqueue_jobs(["warm-up"])
    celery = dispatcher.celery
    rows = [
        ("Redis PING", median_ms(r.ping, 1000)),
        ("Redis LPUSH + BRPOP", median_ms(push_pop, 1000)),
        (
            "Celery send_task (enqueue_jobs of 1 id)",
            median_ms(lambda: dispatcher.enqueue_jobs(["x"]), 300),
        ),
    ]
    with celery.connection_for_write() as conn:
        queue = conn.SimpleQueue(f"scratch-kombu-{uuid.uuid4().hex[:6]}")

        def put_get() -> None:
            queue.put({"job": "x"})
            queue.get(timeout=5).ack()

        put_get()
        rows.append(("kombu put + get + ack (the Celery transport)", median_ms(put_get, 300)))
        queue.close()
    r.delete(key, scratch.celery_queue)
    dispatcher.close()
    r.close()
    return rows


# --------------------------------------------------------------------------- in-process profile


class Phases:
    """Timers around named functions; exclusive and inclusive seconds per label."""

    def __init__(self) -> None:
        self.exclusive: dict[str, float] = defaultdict(float)
        self.inclusive: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list[Any]] = []  # [label, start, child seconds]
        self.patches: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str | None = None) -> None:
        original = getattr(owner, attr)
        phases = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label
            if name is None:  # commits and closes: named after the phase they end
                parent = phases.stack[-1][0] if phases.stack else "outside"
                name = f"{attr} [{parent}]"
            frame = [name, time.perf_counter(), 0.0]
            phases.stack.append(frame)
            try:
                return original(*args, **kwargs)
            finally:
                phases.stack.pop()
                spent = time.perf_counter() - frame[1]
                phases.inclusive[name] += spent
                phases.exclusive[name] += spent - frame[2]
                phases.calls[name] += 1
                if phases.stack:
                    phases.stack[-1][2] += spent

        timed.__wrapped__ = original  # type: ignore[attr-defined]
        self.patches.append((owner, attr, original))
        setattr(owner, attr, timed)

    def undo(self) -> None:
        for owner, attr, original in reversed(self.patches):
            setattr(owner, attr, original)
        self.patches = []


def instrument(phases: Phases) -> None:
    import sqlalchemy.orm

    import services.jobs.execute as execute
    import services.jobs.lease as lease
    import services.jobs.run as run
    import services.mirror.catch_up as catch_up
    import services.sweeps.scheduler as scheduler
    import services.trainer as trainer_pkg
    import services.trainer.train as train

    w = phases.wrap
    w(execute, "execute_job", "execute_job (rest)")
    w(execute, "claim_job", "claim (UPDATE .. RETURNING)")
    w(execute, "policy_for", "objective + pruning policy")
    w(execute, "load_checkpoint", "load checkpoint")
    w(execute.JobRun, "__init__", "JobRun setup")
    w(execute.JobRun, "run", "JobRun.run (rest)")
    w(lease.LeaseKeeper, "__enter__", "lease keeper start (thread)")
    w(lease.LeaseKeeper, "__exit__", "lease keeper stop (join)")
    w(trainer_pkg, "fit", "fit (training, rest)")
    w(train, "load_dataset", "dataset load")
    w(train, "parse_spec", "parse spec (trainer)")
    w(train, "build_network", "build network")
    w(run.JobRun, "on_epoch", "on_epoch hook (rest)")
    w(run.JobRun, "_cancel_flag", "cancel flag (Redis GET)")
    w(run.JobRun, "flush", "epoch flush (rest)")
    w(run, "record_epochs", "record_epochs (UPDATE+INSERT+SELECT)")
    w(run.JobRun, "persist", "final write (rest)")
    w(run, "finish_job", "finish_job (UPDATE)")
    w(catch_up, "job_progressed", "mirror hook: job_progressed")
    w(catch_up, "job_finished", "mirror hook: job_finished")
    w(execute, "advance_and_send", "advance_and_send (rest)")
    w(scheduler, "lock_sweep", "sweep: lock")
    w(scheduler, "sweep_trials", "sweep: trials query")
    w(scheduler, "propose", "sweep: propose")
    w(scheduler, "validate_job", "sweep: validate trial spec")
    w(scheduler, "create_job", "sweep: create_job")
    w(Dispatcher, "enqueue_jobs", "enqueue (Celery send_task)")
    w(sqlalchemy.orm.Session, "commit")
    w(sqlalchemy.orm.Session, "close")


class LoopDispatcher(Dispatcher):
    """Sends for real (to a queue nobody consumes) and hands the ids to the loop."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.pending: deque[str] = deque()

    def enqueue_jobs(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        super().enqueue_jobs(ids)
        self.pending.extend(ids)


def drive(service: Service, body: dict[str, Any], deadline: float) -> tuple[int, float]:
    """Run a sweep's trials with execute_job in this process; (trials, seconds)."""
    from services.jobs.execute import execute_job

    settings = Settings.from_env(
        {**service.env, "SWEEPLAB_QUEUE": f"scratch-{uuid.uuid4().hex[:6]}"}
    )
    dispatcher = LoopDispatcher(settings)
    sweep_id = service.submit(body)
    dispatcher.pending.extend(j.id for j in service.trials(sweep_id) if j.status == "queued")
    n, start = 0, time.perf_counter()
    while dispatcher.pending:
        if time.monotonic() > deadline:
            raise TimeoutError("in-process profile")
        status = execute_job(
            settings=settings,
            session_factory=service.sessions,
            dispatcher=dispatcher,
            job_id=dispatcher.pending.popleft(),
            worker="profile",
        )
        assert status == "succeeded", status
        n += 1
    seconds = time.perf_counter() - start
    with contextlib.suppress(Exception):
        dispatcher.redis.delete(settings.celery_queue)
    dispatcher.close()
    return n, seconds


def profile(service: Service, trials: int, args: argparse.Namespace, deadline: float) -> None:
    def body(n: int) -> dict[str, Any]:
        return sweep_body(n, args.epochs, args.n_samples, args.max_concurrency, "profile")

    drive(service, body(10), deadline)  # warm-up: imports, first connections
    phases = Phases()
    instrument(phases)
    try:
        n, seconds = drive(service, body(trials), deadline)
    finally:
        phases.undo()
    total = sum(phases.exclusive.values())
    print(
        f"\nwhere a trial's time goes in a worker process ({n} trials run by execute_job in "
        f"this process, {1000 * seconds / n:.2f} ms per trial end to end; exclusive time: "
        "a phase's own time, without the phases timed inside it)"
    )
    print(f"{'phase':<52}{'ms/trial':>10}{'share':>8}{'calls/trial':>13}{'incl ms':>10}")
    for label, spent in sorted(phases.exclusive.items(), key=lambda kv: -kv[1]):
        print(
            f"{label:<52}{1000 * spent / n:>10.3f}{100 * spent / total:>7.1f}%"
            f"{phases.calls[label] / n:>13.2f}{1000 * phases.inclusive[label] / n:>10.3f}"
        )
    print(f"{'total (timed)':<52}{1000 * total / n:>10.3f}")

    groups = {
        "claim (+ its commit, policy, JobRun setup)": (
            "claim",
            "objective",
            "JobRun setup",
            "[execute_job",
            "load checkpoint",
        ),
        "dataset load + spec parse + build": ("dataset load", "parse spec", "build network"),
        "fit (training itself)": ("fit (training",),
        "epoch flushes (on_epoch, record_epochs, commit)": (
            "on_epoch",
            "cancel flag",
            "epoch flush",
            "record_epochs",
            "[epoch flush",
        ),
        "finish (finish_job, final write, commit)": ("finish_job", "final write"),
        "lease keeper thread start/stop": ("lease keeper",),
        "sweep scheduler (advance_and_send + commit)": (
            "sweep:",
            "advance_and_send",
            "enqueue",
        ),
        "mirror hooks": ("mirror hook",),
    }
    grouped: dict[str, float] = defaultdict(float)
    for label, spent in phases.exclusive.items():
        for group, keys in groups.items():
            if any(k in label for k in keys):
                grouped[group] += spent
                break
        else:
            grouped["other (execute_job, JobRun.run, sessions)"] += spent
    print("\nthe same, by phase")
    print(f"{'phase':<52}{'ms/trial':>10}{'share':>8}")
    for group, spent in sorted(grouped.items(), key=lambda kv: -kv[1]):
        print(f"{group:<52}{1000 * spent / n:>10.3f}{100 * spent / total:>7.1f}%")

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        n, seconds = drive(service, body(trials), deadline)
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(r"services/|sqlalchemy/orm/session|sqlalchemy/engine/base|redis/client", 40)
    print(
        f"\ncProfile of another {n} trials ({1000 * seconds / n:.2f} ms per trial under the "
        "profiler): top entries by cumulative time (divide by the trials for per trial)"
    )
    text = out.getvalue()
    print(text[text.find("   ncalls") :].rstrip())
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    text = out.getvalue()
    print("\ntop entries by own time")
    print(text[text.find("   ncalls") :].rstrip())


# --------------------------------------------------------------------------- PostgreSQL


# --------------------------------------------------------------------------- main


def measure(
    label: str,
    database_url: str,
    redis_url: str,
    mlflow_url: str,
    root: Path,
    args: argparse.Namespace,
    deadline: float,
) -> dict[str, Any]:
    service = Service(root, database_url, redis_url, mlflow_url)
    try:
        service.start_worker()
        warm = sweep_body(4 * PROCESSES, args.epochs, args.n_samples, args.max_concurrency, "warm")
        service.run_sweep(warm, deadline - time.monotonic())
        # the warm-up's mirror must not run inside the measurement
        service.mirrored(service.last_sweep_id, deadline - time.monotonic())
        body = sweep_body(args.trials, args.epochs, args.n_samples, args.max_concurrency, label)
        print(f"[{label}] service: {args.trials} trials ...", flush=True)
        pid = service.worker.pid if service.worker else None
        before = cpu_seconds(pid)
        wall, jobs = service.run_sweep(body, deadline - time.monotonic())
        after = cpu_seconds(pid)
        # not in the overhead: the mirror catches up behind the trials (low priority)
        finished = max((j.finished_at.timestamp() for j in jobs if j.finished_at), default=0.0)
        mirror_lag = service.mirrored(service.last_sweep_id, deadline - time.monotonic())
        mirror_lag -= finished
        service.stop_worker()
        statuses = {j.status for j in jobs}
        assert len(jobs) == args.trials and statuses == {"succeeded"}, statuses
        from services.specs import trainer_spec

        specs = [trainer_spec(j.spec) for j in jobs]
        print(f"[{label}] Pool(2): {len(specs)} fit calls ...", flush=True)
        pool_wall, pool_fit = bare_pool(specs)
        in_worker = [
            (j.finished_at - j.started_at).total_seconds()
            for j in jobs
            if j.finished_at and j.started_at
        ]
        waits = [(j.started_at - j.created_at).total_seconds() for j in jobs if j.started_at]
        row = {
            "backend": label,
            "wall": wall,
            "pool": pool_wall,
            "train": sum(j.train_seconds or 0.0 for j in jobs),
            "pool_fit": pool_fit,
            "in_worker": statistics.median(in_worker),
            "in_worker_sum": sum(in_worker),
            "cpu": {k: after[k] - before[k] for k in after},
            "wait": statistics.median(waits),
            "mirror_lag": mirror_lag,
        }
        if args.profile_trials > 0:
            profile(service, args.profile_trials, args, deadline)
        return row
    finally:
        service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="100 trials")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-samples", type=int, default=16)
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument(
        "--profile-trials", type=int, default=None, help="default: --trials; 0: no profile"
    )
    parser.add_argument("--postgres", default=None, help="a server's URL: also on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--mlflow", action="store_true", help="mirror to a local MLflow server")
    parser.add_argument(
        "--packing",
        default="off",
        choices=["off", "auto"],
        help="the sweeps' packing (off: the per-trial path; auto: packs of tiny trials)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="for the whole run (s)")
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    args = parser.parse_args()
    global PACKING
    PACKING = args.packing
    if args.quick:
        args.trials = 100
    if args.profile_trials is None:
        args.profile_trials = args.trials

    def on_alarm(*_: object) -> None:
        raise TimeoutError(f"the run took longer than --timeout {args.timeout:g} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(args.timeout)))
    deadline = time.monotonic() + args.timeout

    root = Path(tempfile.mkdtemp(prefix="sweeplab-overhead-"))
    procs: list[Callable[[], None]] = []
    rows: list[dict[str, Any]] = []
    try:
        port = free_port()
        redis_proc = start_redis(port, root / "redis", root / "redis.log")
        REDIS_PID.append(redis_proc.pid)
        procs.append(lambda: (redis_proc.terminate(), redis_proc.wait(10)))
        redis_url = f"redis://127.0.0.1:{port}/0"
        mlflow_url = ""
        if args.mlflow:
            from services.mirror import server as mlflow_server

            mport = free_port()
            ml_proc = mlflow_server.start_server("127.0.0.1", mport, root / "mlflow")
            procs.append(lambda: mlflow_server.stop_server(ml_proc))
            mlflow_url = f"http://127.0.0.1:{mport}"
            mlflow_server.wait_ready(mlflow_url, timeout=120, proc=ml_proc)

        rt = round_trips(Settings.from_env({"REDIS_URL": redis_url}))
        print(
            f"{args.trials} trials: xor n={args.n_samples}, 4 tanh units, {args.epochs} epochs, "
            f"max_concurrency {args.max_concurrency}, {PROCESSES} worker processes, "
            f"MLflow mirror {'on' if args.mlflow else 'off'}, packing {PACKING}",
            flush=True,
        )
        backends: list[tuple[str, str]] = []
        if not args.no_sqlite:
            backends.append(("sqlite", f"sqlite:///{root / 'overhead.db'}"))
        for label, url in backends:
            rows.append(measure(label, url, redis_url, mlflow_url, root, args, deadline))
        if args.postgres:
            pg_url = create_pg_database(args.postgres, "sweeplab_overhead")
            try:
                rows.append(
                    measure("postgresql", pg_url, redis_url, mlflow_url, root, args, deadline)
                )
            finally:
                drop_pg_database(args.postgres, pg_url)
    finally:
        signal.alarm(0)
        for stop in reversed(procs):
            with contextlib.suppress(Exception):
                stop()
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print("\nround trips on this machine (median)")
    for name, ms in rt:
        print(f"{name:<52}{ms:>8.3f} ms")
    n = args.trials
    print(f"\n{n} trials, {PROCESSES} processes")
    head = (
        f"{'backend':<12}{'service s':>11}{'Pool(2) s':>11}{'fit s (svc)':>13}{'fit s (pool)':>14}"
        f"{'trial ms':>10}{'mean':>7}{'queued ms':>11}"
        f"{'overhead ms/trial/proc':>24}{'between ms':>12}"
    )
    print(head)
    for r in rows:
        overhead = (r["wall"] - r["pool"]) / n * PROCESSES
        between = (r["wall"] * PROCESSES - r["in_worker_sum"]) / n
        print(
            f"{r['backend']:<12}{r['wall']:>11.2f}{r['pool']:>11.2f}{r['train']:>13.3f}"
            f"{r['pool_fit']:>14.3f}{1000 * r['in_worker']:>10.1f}"
            f"{1000 * r['in_worker_sum'] / n:>7.1f}{1000 * r['wait']:>11.1f}"
            f"{1000 * overhead:>24.1f}{1000 * between:>12.1f}"
        )
    print(
        "trial ms: median (and mean) started_at -> finished_at of a trial in the service; "
        "queued ms: median created_at -> started_at; between ms: per trial per process, "
        "the time a process spends outside claim -> finish (advance_and_send, Celery "
        "delivery, prefork, ack, idle) = (wall * 2 - sum of trial times) / N. "
        "Target: overhead <= 15 ms per trial."
    )
    print("\nCPU ms per trial during the service's sweep (2 cores = 2000 ms per wall second)")
    print(f"{'process':<32}" + "".join(f"{r['backend']:>12}" for r in rows))
    for key in rows[0]["cpu"] if rows else []:
        cells = "".join(f"{1000 * r['cpu'][key] / n:>12.2f}" for r in rows)
        print(f"{key:<32}{cells}")
    cells = "".join(f"{2000 * r['wall'] / n:>12.2f}" for r in rows)
    print(f"{'(2 cores x wall, per trial)':<32}{cells}")
    if any(r["mirror_lag"] for r in rows):
        print(
            "\nMLflow: every trial's run and the parent run final, seconds after the last "
            "trial finished (the mirror runs behind the trials, at low priority; not in "
            "the overhead): " + ", ".join(f"{r['backend']} {r['mirror_lag']:.1f} s" for r in rows)
        )


if __name__ == "__main__":
    main()
