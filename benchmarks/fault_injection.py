"""Fault injection against the real stack: no job lost or failed by the infrastructure.

    .venv/bin/python benchmarks/fault_injection.py            # every scenario (~10 min)
    .venv/bin/python benchmarks/fault_injection.py --quick    # shorter outages, fewer jobs
    .venv/bin/python benchmarks/fault_injection.py --only sigkill mlflow

Everything runs on loopback and is thrown away at the end, whatever happens: a
PostgreSQL cluster of its own (``initdb`` / ``pg_ctl`` beside the server
binary, run as the ``postgres`` user when started as root), a Redis server on
a free port, an MLflow server, and Celery workers (two processes each). The
machine's shared PostgreSQL and Redis are never touched. Each scenario prints
one row; the script exits 1 if any scenario misses its target.

Scenarios (the issue's figures):
    sigkill    N jobs, a worker process SIGKILLed K times mid-job: N/N succeed,
               each final val_loss equal to the undisturbed run, every epoch once
    sigterm    SIGTERM to the worker 3 times during a sweep: 0 attempts counted,
               the training lost per stop (at most the time-based checkpoint period)
    redis      Redis restarted mid-sweep (its data gone), then FLUSHALL mid-sweep:
               every trial completes, within two recovery periods of the outage
    postgres   PostgreSQL stopped for 30 s mid-sweep: 0 failed jobs
    mlflow     MLflow stopped for 60 s mid-sweep: every run and metric point
               arrives later, once
    recovery   10 recovery periods with waiting jobs: 0 duplicate messages

One script (over the house's 400 lines) so that it runs alone: six scenarios and the
throwaway servers they break; what other benchmarks share is in ``support.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import redis  # noqa: E402
from sqlalchemy import select  # noqa: E402

from api import create_app  # noqa: E402
from benchmarks.support import free_port, start_worker, stop_workers, wait_for  # noqa: E402
from services.config import Settings  # noqa: E402
from services.db import (  # noqa: E402
    Job,
    JobCheckpoint,
    JobMetric,
    Sweep,
    make_engine,
    make_session_factory,
    upgrade,
)
from services.db.models import TERMINAL_STATUSES  # noqa: E402
from services.mirror import server as mlflow_server  # noqa: E402
from services.specs import trainer_spec  # noqa: E402
from services.stack.processes import start_redis  # noqa: E402
from services.trainer import fit  # noqa: E402
from tests.auth_support import authorize, new_token  # noqa: E402

# --------------------------------------------------------------------------- servers


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"PostgreSQL's {name} not found (apt-get install postgresql)")
    return path


class Postgres:
    """A throwaway cluster on a free port, its files in a temporary directory."""

    def __init__(self, root: Path):
        self.dir = root / "pg"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.dir.mkdir()
        if self.as_root:  # initdb refuses to run as root
            shutil.chown(root, "postgres")
            shutil.chown(self.dir, "postgres")
        self._run([_pg_bin("initdb"), "-D", str(self.dir), "-U", "postgres", "--auth=trust"])
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str]) -> None:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = str(self.dir / "log")
        self._run([_pg_bin("pg_ctl"), "-D", str(self.dir), "-o", options, "-l", log, "-w", "start"])

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([_pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop"])


class Redis:
    def __init__(self, root: Path):
        self.root, self.port = root / "redis", free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_redis(self.port, self.root, self.root / "redis.log")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class Mlflow:
    def __init__(self, root: Path):
        self.var, self.port = root / "mlflow", free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = mlflow_server.start_server("127.0.0.1", self.port, self.var)
        wait_for(lambda: _http_ok(self.url + "/health"), 120, "the MLflow server")

    def stop(self) -> None:
        if self.proc is not None:
            mlflow_server.stop_server(self.proc)
            self.proc = None

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/2.0/mlflow/{path}?{query}", timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# --------------------------------------------------------------------------- the service


class Service:
    """Workers, an in-process API client and the database, on the throwaway servers."""

    def __init__(self, root: Path, database_url: str, redis_url: str, mlflow_url: str, **env: str):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MLFLOW_TRACKING_URI": mlflow_url,
            "SWEEPLAB_QUEUE": f"fault-{uuid.uuid4().hex[:6]}",
            "SWEEPLAB_LEASE_SECONDS": "5",
            "SWEEPLAB_CHECKPOINT_EVERY": "2",
            "SWEEPLAB_FLUSH_SECONDS": "0.2",
            "SWEEPLAB_RECOVER_SECONDS": "5",
            "SWEEPLAB_REQUEUE_SECONDS": "5",
            "SWEEPLAB_MIRROR_CATCH_UP_SECONDS": "5",
            "PYTHONPATH": str(REPO),
            **env,
        }
        upgrade(database_url)
        self.settings = Settings.from_env(self.env)
        self.engine = make_engine(database_url)
        self.sessions = make_session_factory(self.engine)
        self.app = create_app(self.settings)
        self.client = authorize(self.app.test_client(), new_token(self.sessions))
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self) -> subprocess.Popen[bytes]:
        name = f"w{len(self.workers)}-{uuid.uuid4().hex[:4]}"
        proc = start_worker(self.env, self.settings.celery_queue, self.root / f"{name}.log", name)
        self.workers.append(proc)
        return proc

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        stop_workers(self.workers, sig)
        self.workers = []

    def close(self) -> None:
        self.stop_workers()
        self.app.extensions["sweeplab"].dispatcher.close()
        self.app.extensions["sweeplab"].engine.dispose()
        self.engine.dispose()

    def post(self, path: str, body: Any) -> dict[str, Any]:
        response = self.client.post(f"/api/v1{path}", json=body)
        assert response.status_code in (201, 202), response.get_json()
        return response.get_json()

    def jobs(self, sweep_id: str | None = None, ids: list[str] | None = None) -> list[Job]:
        with self.sessions() as session:
            stmt = select(Job)
            if sweep_id:
                stmt = stmt.where(Job.sweep_id == sweep_id)
            if ids:
                stmt = stmt.where(Job.id.in_(ids))
            return list(session.scalars(stmt.order_by(Job.created_at)))

    def epochs(self, job_id: str) -> list[int]:
        with self.sessions() as session:
            return sorted(
                session.scalars(select(JobMetric.epoch).where(JobMetric.job_id == job_id))
            )

    def metric(self, job_id: str, name: str) -> list[float | None]:
        with self.sessions() as session:
            rows = session.scalars(
                select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
            )
            return [r.metrics.get(name) for r in rows]

    def sweep_status(self, sweep_id: str) -> str:
        with self.sessions() as session:
            sweep = session.get(Sweep, sweep_id)
            assert sweep is not None
            return sweep.status

    def wait_done(self, ids: list[str], timeout: float) -> list[Job]:
        def done() -> list[Job] | None:
            jobs = self.jobs(ids=ids)
            return jobs if all(j.status in TERMINAL_STATUSES for j in jobs) else None

        return wait_for(done, timeout, f"{len(ids)} jobs to end", interval=0.5)

    def wait_sweep(self, sweep_id: str, timeout: float) -> list[Job]:
        def done() -> list[Job] | None:
            jobs = self.jobs(sweep_id)
            over = self.sweep_status(sweep_id) != "running"
            return jobs if over and all(j.status in TERMINAL_STATUSES for j in jobs) else None

        return wait_for(done, timeout, f"sweep {sweep_id}", interval=0.5)


def job_spec(seed: int, epochs: int, n_samples: int = 6000) -> dict[str, Any]:
    return {
        "name": f"fault-{seed}",
        "reuse": False,  # every scenario trains: an identical earlier job would be copied
        "dataset": {"name": "blobs", "n_samples": n_samples, "seed": 0},
        "architecture": {"layers": [{"units": 32, "activation": "relu"}]},
        "hyperparameters": {
            "learning_rate": 0.05,
            "epochs": epochs,
            "batch_size": 32,
            "seed": seed,
        },
    }


def sweep_spec(n: int, epochs: int, n_samples: int = 6000, experiment: str = "faults") -> dict:
    return {
        "name": f"faults-{uuid.uuid4().hex[:4]}",
        "experiment": experiment,
        "base": job_spec(0, epochs, n_samples),
        "method": "grid",
        "parameters": {"hyperparameters.seed": {"values": list(range(n))}},
        "max_concurrency": 4,
        "packing": "off",  # trials alone, as the figures were taken (packs: tests/integration)
    }


def every_epoch_once(service: Service, job: Job) -> bool:
    return service.epochs(job.id) == list(range(1, job.epochs_done + 1))


# --------------------------------------------------------------------------- scenarios

Row = dict[str, Any]


def scenario_sigkill(service: Service, quick: bool) -> Row:
    n_jobs, kills, epochs = (8, 3, 40) if quick else (20, 5, 40)
    specs = [job_spec(seed, epochs, 40_000) for seed in range(n_jobs)]  # ~3 s a job
    service.start_worker()
    ids = [service.post("/jobs", spec)["id"] for spec in specs]
    killed, victims = 0, set()
    takeover: list[float] = []  # seconds from a kill to the job's next attempt
    while killed < kills:
        running = [j for j in service.jobs(ids=ids) if j.status == "running" and j.epochs_done >= 1]
        if not running:
            if all(j.status in TERMINAL_STATUSES for j in service.jobs(ids=ids)):
                break
            time.sleep(0.2)
            continue
        fresh = [j for j in running if j.id not in victims] or running
        victim = fresh[0]
        victims.add(victim.id)
        pid = int(str(victim.worker).rsplit(":", 1)[1])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed += 1
        killed_at = time.monotonic()
        wait_for(  # another process takes the job over before the next kill
            lambda v=victim: (
                (j := service.jobs(ids=[v.id])[0]).attempts > v.attempts
                or j.status in TERMINAL_STATUSES
            ),
            120,
            "the killed job to be taken over",
            interval=0.05,
        )
        takeover.append(time.monotonic() - killed_at)
    done = service.wait_done(ids, 600)
    equal = 0
    for spec, job in zip(specs, sorted(done, key=lambda j: ids.index(j.id)), strict=True):
        reference = [r["val_loss"] for r in fit(trainer_spec(spec)).history]
        equal += service.metric(job.id, "val_loss") == reference
    ok_epochs = sum(every_epoch_once(service, j) for j in done)
    succeeded = sum(j.status == "succeeded" for j in done)
    attempts = sum(j.attempts for j in done)
    resumed = sum(j.attempts > 1 for j in done)
    lease = service.settings.lease_seconds
    service.stop_workers()
    return {
        "scenario": f"{n_jobs} jobs, a worker process SIGKILLed {killed} times",
        "figure": f"{succeeded}/{n_jobs} succeeded; {equal}/{n_jobs} curves equal to an "
        f"undisturbed run; {ok_epochs}/{n_jobs} with every epoch once; {resumed} taken over "
        f"by another process ({attempts} attempts in all), each {min(takeover or [0]):.1f}-"
        f"{max(takeover or [0]):.1f} s after its kill (leases: {lease:g} s)",
        "ok": succeeded == n_jobs and equal == n_jobs and ok_epochs == n_jobs and killed == kills,
    }


def scenario_sigterm(service: Service, quick: bool) -> Row:
    stops = 2 if quick else 3
    # trials of ~10-20 s, so that every stop finds two of them mid-training
    sweep = service.post("/sweeps", sweep_spec(4, 60 if quick else 100, 200_000))
    service.start_worker()
    lost: list[float] = []  # seconds of training redone after a stop, per released trial
    seen: dict[str, int] = {}  # epochs at the last (re)start: a stop must find new progress
    for _ in range(stops):
        wait_for(
            lambda seen=seen: (
                sum(
                    j.status == "running" and j.epochs_done >= seen.get(j.id, 0) + 3
                    for j in service.jobs(sweep["id"])
                )
                >= 2
            ),
            300,
            "two trials training since the last start",
        )
        released_before = {j.id: j.released for j in service.jobs(sweep["id"])}
        service.stop_workers(signal.SIGTERM)
        # Redone after the stop: the epochs recorded since the job's last checkpoint,
        # at their measured pace, plus the unfinished epoch (at most one).
        with service.sessions() as session:
            for job in session.scalars(select(Job).where(Job.sweep_id == sweep["id"])):
                if job.released <= released_before.get(job.id, 0):
                    continue
                ckpt = session.get(JobCheckpoint, job.id)
                kept = ckpt.epoch if ckpt is not None else 0
                pace = [s for s in service.metric(job.id, "seconds") if s]
                lost.append((job.epochs_done - kept + 1) * (max(pace) if pace else 0.0))
        seen = {j.id: j.epochs_done for j in service.jobs(sweep["id"])}
        service.start_worker()
    jobs = service.wait_sweep(sweep["id"], 900)
    service.stop_workers()
    counted = sum(max(0, j.attempts - 1 - j.released) for j in jobs)
    succeeded = sum(j.status == "succeeded" for j in jobs)
    limit = service.settings.checkpoint_seconds
    worst = max(lost, default=0.0)
    return {
        "scenario": f"SIGTERM to the worker {stops} times during a sweep of {len(jobs)} trials",
        "figure": f"{succeeded}/{len(jobs)} succeeded; {counted} attempts counted against a job; "
        f"{len(lost)} trials released, training redone at most {worst:.1f} s per stop "
        f"(time-based checkpoints every {limit:.0f} s)",
        "ok": succeeded == len(jobs) and counted == 0 and 0 < len(lost) and worst <= limit,
    }


def scenario_redis(service: Service, redis_server: Redis, quick: bool) -> Row:
    periods = []
    outcome = []
    for how in ("restart", "flushall"):
        sweep = service.post("/sweeps", sweep_spec(6, 15))
        service.start_worker()
        wait_for(
            lambda s=sweep: any(j.epochs_done >= 2 for j in service.jobs(s["id"])),
            120,
            "a trial under way",
        )
        if how == "restart":
            redis_server.stop()
            time.sleep(3)
            redis_server.start()
        else:
            redis_server.client().flushall()
        back = time.monotonic()
        at_outage = {j.id: j.epochs_done for j in service.jobs(sweep["id"])}

        def moving(s: dict = sweep, at: dict = at_outage) -> bool:
            """Every trial has ended or trained on since the outage, and new ones start."""
            jobs = service.jobs(s["id"])
            return all(
                j.status in TERMINAL_STATUSES or j.epochs_done > at.get(j.id, -1) for j in jobs
            )

        wait_for(moving, 600, "every trial to move again", interval=0.2)
        periods.append((time.monotonic() - back) / service.settings.recover_seconds)
        jobs = service.wait_sweep(sweep["id"], 600)
        outcome.append(sum(j.status == "succeeded" for j in jobs) == len(jobs))
        service.stop_workers()
    return {
        "scenario": "Redis restarted mid-sweep (data gone), then FLUSHALL mid-sweep",
        "figure": f"every trial succeeded: {outcome}; every trial moving again "
        + ", ".join(f"{p:.1f}" for p in periods)
        + " recovery periods after the outage",
        "ok": all(outcome) and all(p <= 2 for p in periods),
    }


def scenario_postgres(service: Service, pg: Postgres, quick: bool) -> Row:
    outage = 10 if quick else 30
    sweep = service.post("/sweeps", sweep_spec(6, 30, 20_000))
    service.start_worker()
    wait_for(lambda: any(j.epochs_done >= 3 for j in service.jobs(sweep["id"])), 120, "a trial")
    service.engine.dispose()
    service.app.extensions["sweeplab"].engine.dispose()
    pg.stop()
    time.sleep(outage)
    pg.start()
    jobs = service.wait_sweep(sweep["id"], 900)
    service.stop_workers()
    failed = [j for j in jobs if j.status != "succeeded"]
    return {
        "scenario": f"PostgreSQL stopped for {outage} s mid-sweep of {len(jobs)} trials",
        "figure": f"{len(failed)} jobs not succeeded "
        + (f"({[(j.status, j.error) for j in failed][:2]})" if failed else "")
        + f"; every epoch once: {all(every_epoch_once(service, j) for j in jobs)}",
        "ok": not failed and all(every_epoch_once(service, j) for j in jobs),
    }


def scenario_mlflow(service: Service, mlflow: Mlflow, quick: bool) -> Row:
    outage = 20 if quick else 60
    experiment = f"faults-{uuid.uuid4().hex[:6]}"
    sweep = service.post("/sweeps", sweep_spec(4, 20, 6000, experiment))
    service.start_worker()
    wait_for(lambda: any(j.mlflow_run_id for j in service.jobs(sweep["id"])), 120, "a run")
    mlflow.stop()
    time.sleep(outage)
    mlflow.start()
    jobs = service.wait_sweep(sweep["id"], 900)

    def mirrored() -> bool:
        return all(j.mlflow_synced_status == j.status for j in service.jobs(sweep["id"]))

    wait_for(mirrored, 300, "the mirror to catch up")
    service.stop_workers()
    jobs = service.jobs(sweep["id"])  # with their run ids
    exp = mlflow.get("experiments/get-by-name", experiment_name=experiment)["experiment"]
    runs = mlflow.post(
        "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100}
    )["runs"]
    children = [
        r
        for r in runs
        if any(
            t["key"] == "sweeplab.kind" and t["value"] == "job" for t in r["data"].get("tags", [])
        )
    ]
    exact = 0
    for job in jobs:
        history = mlflow.get(
            "metrics/get-history", run_id=job.mlflow_run_id, metric_key="train_loss"
        ).get("metrics", [])
        steps = sorted(int(m["step"]) for m in history)
        exact += steps == service.epochs(job.id)
    return {
        "scenario": f"MLflow stopped for {outage} s mid-sweep of {len(jobs)} trials",
        "figure": f"{len(children)} runs for {len(jobs)} trials; {exact}/{len(jobs)} with every "
        "epoch's point exactly once",
        "ok": len(children) == len(jobs) and exact == len(jobs),
    }


def scenario_recovery(service: Service, redis_server: Redis, quick: bool) -> Row:
    """Jobs wait in the queue (no worker takes them): passes must not add messages."""
    from services.celery_app import Dispatcher  # late: only this scenario sends directly
    from services.jobs.recovery import recover  # late: idem

    ids = [service.post("/jobs", job_spec(seed, 3))["id"] for seed in range(3)]
    queue = service.settings.celery_queue
    r = redis_server.client()
    before = r.llen(queue)
    dispatcher = Dispatcher(service.settings)
    try:
        for _ in range(10):  # each pass as if a whole requeue period had gone by
            with service.sessions() as session:
                for job in session.scalars(select(Job).where(Job.id.in_(ids))):
                    job.updated_at = job.updated_at.replace(year=job.updated_at.year - 1)
                session.commit()
            recover(
                settings=service.settings, session_factory=service.sessions, dispatcher=dispatcher
            )
    finally:
        dispatcher.close()
    extra = r.llen(queue) - before
    return {
        "scenario": "10 recovery passes with 3 jobs waiting in the queue",
        "figure": f"{extra} duplicate messages ({before} queued before)",
        "ok": extra == 0,
    }


SCENARIOS = ["recovery", "sigkill", "mlflow", "redis", "postgres", "sigterm"]


@contextlib.contextmanager
def servers(root: Path) -> Iterator[tuple[Postgres, Redis, Mlflow]]:
    pg, rs, ml = Postgres(root), Redis(root), Mlflow(root)
    try:
        pg.start()
        rs.start()
        ml.start()
        yield pg, rs, ml
    finally:
        for server in (ml, rs, pg):
            with contextlib.suppress(Exception):
                server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter outages, fewer jobs")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=SCENARIOS)
    parser.add_argument("--keep", action="store_true", help="keep the workers' logs and data")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sweeplab-faults-"))
    rows: list[Row] = []
    started = time.monotonic()
    try:
        with servers(root) as (pg, rs, ml):
            for name in args.only:
                service = Service(root / name, pg.url, rs.url, ml.url)
                t0 = time.monotonic()
                try:
                    if name == "sigkill":
                        row = scenario_sigkill(service, args.quick)
                    elif name == "sigterm":
                        row = scenario_sigterm(service, args.quick)
                    elif name == "redis":
                        row = scenario_redis(service, rs, args.quick)
                    elif name == "postgres":
                        row = scenario_postgres(service, pg, args.quick)
                    elif name == "mlflow":
                        row = scenario_mlflow(service, ml, args.quick)
                    else:
                        row = scenario_recovery(service, rs, args.quick)
                except Exception as exc:  # a scenario that breaks is a miss, the rest still run
                    row = {"scenario": name, "figure": f"{type(exc).__name__}: {exc}", "ok": False}
                finally:
                    service.close()
                    with contextlib.suppress(Exception):
                        rs.client().flushall()
                row["seconds"] = time.monotonic() - t0
                rows.append(row)
                print(
                    f"[{'ok' if row['ok'] else 'MISS'}] {row['scenario']}: {row['figure']} "
                    f"({row['seconds']:.0f} s)",
                    flush=True,
                )
    finally:
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{sum(r['ok'] for r in rows)}/{len(rows)} scenarios met their target "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
