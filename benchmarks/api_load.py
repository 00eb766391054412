"""API read latency under load while a sweep trains: 10,000 jobs, a 1,000-trial sweep.

    .venv/bin/python benchmarks/api_load.py                 # SQLite, 100 req/s for 60 s
    .venv/bin/python benchmarks/api_load.py --quick         # 2,000 jobs, 100 trials, 15 s
    .venv/bin/python benchmarks/api_load.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

What it measures (issue 12, "benchmarks/api_load.py"):

- the database: 10,000 finished jobs (clones of one job trained for real, three epochs
  of metrics each, created over the last ten days), bulk-inserted with SQLAlchemy Core
  and owned by the token's user; then a 1,000-trial grid sweep submitted through the
  API (xor, 4 tanh units, 3 epochs, max_concurrency 8) that trains during the load.
  The trials have 20,000 samples (~90-110 ms of ``fit`` each; 60,000 with ``--quick``) so
  that the sweep trains through the warm-up and the load: with 16 samples its 1,000
  trials take ~10 s, over before the load would start.
- the stack: the API under gunicorn on a free loopback port (2 workers x 4 threads,
  ``api:create_app()``, as ``make up`` serves it), a private Redis server, one Celery
  worker with 2 processes; MLflow off.
- the load: open loop at ``--rate`` requests/s for ``--seconds`` (after ``--warmup`` s of
  the sweep training without load): request i is due at start + i/rate and is sent by
  a pool of threads (keep-alive connections); its latency runs from when it was due,
  so a server that falls behind is not hidden (no coordinated omission). A mix of GET
  /jobs (first page or a later one by cursor), /jobs/<id>, /jobs/<id>/metrics, /sweeps,
  /sweeps/<id>, /sweeps/<id>/trials and /sweeps/<id>/leaderboard (random seeded jobs).
  Errors: non-2xx answers and exceptions (timeouts included). The server-side time of
  each request comes from gunicorn's access log (``%(D)s``).
- the trials: run time (started_at -> finished_at) and train_seconds of the trials that
  ran within the load against those that ran in the warm-up before it (medians), and
  the sweep's trials per second in each period. Afterwards the sweep is cancelled.

SQLite first, then (``--postgres``) a throwaway database on that server, dropped at the
end. Everything it starts is stopped whatever happens; ``--timeout`` bounds the run.
Targets: p99 under 50 ms, 0 errors, no trial slowed by more than 10%.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import psutil  # noqa: E402
import urllib3  # noqa: E402
from sqlalchemy import event, insert, select  # noqa: E402

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
from services.config import Settings  # noqa: E402
from services.db import make_engine, make_session_factory, upgrade  # noqa: E402
from services.db.models import Job, JobMetric, User  # noqa: E402
from services.stack.processes import find_executable, spawn, start_redis  # noqa: E402
from tests.auth_support import authorize, new_token  # noqa: E402

PROCESSES = 2
Result = tuple[str, float, float, str | None, float]  # label, ms due, ms sent, error, t
API = "/api/v1"
# route label -> share of the requests
MIX = {
    "GET /jobs": 0.15,
    "GET /jobs/<id>": 0.20,
    "GET /jobs/<id>/metrics": 0.20,
    "GET /sweeps": 0.10,
    "GET /sweeps/<id>": 0.15,
    "GET /sweeps/<id>/trials": 0.10,
    "GET /sweeps/<id>/leaderboard": 0.10,
}
P99_MS, SLOWDOWN = 50.0, 1.10


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; nan if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# --------------------------------------------------------------------------- HTTP


class Client:
    """Keep-alive connections to the API (thread-safe), with the token."""

    def __init__(self, port: int, token: str, threads: int):
        self.pool = urllib3.HTTPConnectionPool(
            "127.0.0.1", port, maxsize=threads, block=True, retries=False, timeout=10.0
        )
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.retried = 0  # GETs sent again after a kept-alive connection was reset
        self.lock = threading.Lock()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            r = self.pool.request(method, path, body=data, headers=headers)
        except urllib3.exceptions.ProtocolError:
            # the server closed an idle kept-alive connection as it was reused: a GET is
            # sent again once, as browsers and HTTP libraries do (counted, and printed)
            if method != "GET":
                raise
            with self.lock:
                self.retried += 1
            r = self.pool.request(method, path, body=data, headers=headers)
        try:
            payload = json.loads(r.data) if r.data else None
        except ValueError:
            payload = r.data[:200]
        return r.status, payload

    def get(self, path: str) -> Any:
        status, payload = self.call("GET", path)
        assert status == 200, (path, status, payload)
        return payload


# --------------------------------------------------------------------------- the stack


class Stack:
    """A database, the API under gunicorn, one Celery worker with 2 processes."""

    def __init__(
        self, root: Path, label: str, database_url: str, redis_url: str, processes: int = PROCESSES
    ):
        self.root, self.label, self.database_url = root, label, database_url
        self.processes = processes
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MLFLOW_TRACKING_URI": "",
            "SWEEPLAB_QUEUE": f"load-{uuid.uuid4().hex[:8]}",
            "SWEEPLAB_BLAS_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        upgrade(database_url)
        self.engine = make_engine(database_url)
        self.sessions = make_session_factory(self.engine)
        self.token = new_token(self.sessions)
        self.api: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.access_log = root / f"access-{label}.log"

    def start(self, threads: int) -> Client:
        port = free_port()
        argv = [
            find_executable("gunicorn"),
            *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"),
            *("--timeout", "60", "--limit-request-line", "8190", "--chdir", str(REPO)),
            *("--access-logfile", str(self.access_log)),
            *("--access-logformat", "%(m)s %(U)s %(s)s %(D)s"),
            "api:create_app()",
        ]
        self.api = spawn(argv, self.root / f"api-{self.label}.log", self.env)
        client = Client(port, self.token, threads)

        def healthy() -> bool:
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError(f"gunicorn exited: see {self.root}/api-{self.label}.log")
            with contextlib.suppress(Exception):
                return client.call("GET", "/healthz")[0] == 200
            return False

        wait_for(healthy, 30, "the API")
        queue = self.env["SWEEPLAB_QUEUE"]
        self.worker = start_worker(
            self.env, queue, self.root / f"worker-{self.label}.log", f"load-{queue}", self.processes
        )
        return client

    def pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"api (gunicorn)": [], "worker": []}
        for name, proc in (("api (gunicorn)", self.api), ("worker", self.worker)):
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    main = psutil.Process(proc.pid)
                    out[name] = [proc.pid, *(c.pid for c in main.children(recursive=True))]
        return out

    def close(self) -> None:
        if self.worker is not None:
            stop_workers([self.worker])
        if self.api is not None:
            stop_workers([self.api])  # its process group: SIGTERM, wait, SIGKILL
        self.engine.dispose()

    def seed(self, client: Client, template_id: str, n_jobs: int) -> tuple[list[str], float]:
        """Clone the finished job ``template_id`` (row and metrics) ``n_jobs`` times."""
        start = time.perf_counter()
        with self.engine.connect() as conn:
            row = dict(
                conn.execute(select(Job.__table__).where(Job.id == template_id)).one()._mapping
            )
            metrics = [
                dict(m._mapping)
                for m in conn.execute(
                    select(JobMetric.__table__).where(JobMetric.job_id == template_id)
                )
            ]
            owner = conn.scalar(select(User.id).where(User.name == "admin"))
        rng = random.Random(0)
        now = datetime.now(timezone.utc)
        ids, jobs, rows = [], [], []
        for i in range(n_jobs):
            job_id = uuid.uuid4().hex
            created = now - timedelta(days=10) + timedelta(seconds=i * 864000 / n_jobs)
            started = created + timedelta(seconds=rng.uniform(0.01, 2.0))
            finished = started + timedelta(seconds=rng.uniform(0.05, 5.0))
            objective = (row["objective"] or 0.0) * rng.uniform(0.9, 1.1)
            jobs.append(
                {
                    **row,
                    "id": job_id,
                    "owner_id": owner,
                    "name": f"seeded-{i}",
                    "objective": objective,
                    "created_at": created,
                    "started_at": started,
                    "finished_at": finished,
                    "updated_at": finished,
                }
            )
            for m in metrics:
                rows.append({**{k: v for k, v in m.items() if k != "id"}, "job_id": job_id})
            ids.append(job_id)
        with self.engine.begin() as conn:
            for chunk in range(0, len(jobs), 2000):
                conn.execute(insert(Job.__table__), jobs[chunk : chunk + 2000])
            for chunk in range(0, len(rows), 5000):
                conn.execute(insert(JobMetric.__table__), rows[chunk : chunk + 5000])
        return ids, time.perf_counter() - start

    def trials(self, sweep_id: str) -> list[Any]:
        with self.engine.connect() as conn:
            stmt = select(Job.status, Job.started_at, Job.finished_at, Job.train_seconds).where(
                Job.sweep_id == sweep_id
            )
            return list(conn.execute(stmt))


def wait_job(client: Client, job_id: str, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = client.get(f"{API}/jobs/{job_id}")
        return job if job["status"] not in ("queued", "running") else None

    job = wait_for(done, timeout, f"job {job_id}", interval=0.2)
    assert job["status"] == "succeeded", job
    return job


# --------------------------------------------------------------------------- the load


def plan(
    rng: random.Random, n: int, job_ids: list[str], sweep_id: str, cursors: list[str]
) -> list[tuple[str, str]]:
    """n requests (route label, path), drawn from MIX."""
    labels = list(MIX)
    out = []
    for label in rng.choices(labels, weights=[MIX[k] for k in labels], k=n):
        job = rng.choice(job_ids)
        path = {
            "GET /jobs": f"{API}/jobs"
            + (f"?cursor={rng.choice(cursors)}" if cursors and rng.random() < 0.5 else ""),
            "GET /jobs/<id>": f"{API}/jobs/{job}",
            "GET /jobs/<id>/metrics": f"{API}/jobs/{job}/metrics",
            "GET /sweeps": f"{API}/sweeps",
            "GET /sweeps/<id>": f"{API}/sweeps/{sweep_id}",
            "GET /sweeps/<id>/trials": f"{API}/sweeps/{sweep_id}/trials",
            "GET /sweeps/<id>/leaderboard": f"{API}/sweeps/{sweep_id}/leaderboard",
        }[label]
        out.append((label, path))
    return out


def run_load(
    client: Client, requests: list[tuple[str, str]], rate: float, threads: int
) -> tuple[list[Result], float, float]:
    """Send request i at start + i/rate; (label, ms from due, ms from sent, error) each,
    and the window (time.time() at start and end)."""
    results: list[Result] = []
    lock = threading.Lock()

    def one(label: str, path: str, due: float) -> None:
        sent = time.perf_counter()
        error = None
        try:
            status, payload = client.call("GET", path)
            if not 200 <= status < 300:
                error = f"{status} {str(payload)[:120]}"
        except Exception as exc:  # a timeout or a refused connection is an error too
            error = f"{type(exc).__name__}: {exc}"[:160]
        end = time.perf_counter()
        with lock:
            results.append((label, 1000 * (end - due), 1000 * (end - sent), error, due - start))

    wall_start = time.time()
    start = time.perf_counter()
    with ThreadPoolExecutor(threads, thread_name_prefix="load") as pool:
        for i, (label, path) in enumerate(requests):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, label, path, due)
    return results, wall_start, time.time()


def server_times(access_log: Path, since: int) -> dict[str, list[float]]:
    """ms per route label from gunicorn's access log (lines after byte ``since``)."""
    out: dict[str, list[float]] = defaultdict(list)
    with open(access_log, "rb") as f:
        f.seek(since)
        for line in f.read().decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[0] != "GET" or not parts[1].startswith(API):
                continue
            segs = parts[1][len(API) :].strip("/").split("/")
            label = "GET /" + "/".join(s if j % 2 == 0 else "<id>" for j, s in enumerate(segs))
            out[label].append(int(parts[3]) / 1000)
    return out


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    def cpu(pid: int) -> float:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        return 0.0

    out = {name: sum(cpu(p) for p in group) for name, group in pids.items()}
    machine = psutil.cpu_times()
    out["machine (all processes)"] = machine.user + machine.system + machine.nice
    out["load generator (this process)"] = cpu(os.getpid())
    out["postgres (all)"] = sum(
        cpu(p.pid) for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"
    )
    return out


def profile_routes(
    env: dict[str, str],
    token: str,
    requests: list[tuple[str, str]],
    per_route: int = 40,
    cprofile: bool = False,
) -> dict[str, dict[str, Any]]:
    """Each route ``per_route`` times in this process (Flask's test client, no load, no
    HTTP): median ms, and per request the SQL statements, their ms and the body's KiB."""
    app = create_app(Settings.from_env(env))
    engine = app.extensions["sweeplab"].engine
    sql = {"n": 0, "s": 0.0}

    def before(conn: Any, *_: Any) -> None:
        conn.info["t0"] = time.perf_counter()

    def after(conn: Any, *_: Any) -> None:
        sql["n"] += 1
        sql["s"] += time.perf_counter() - conn.info.pop("t0", time.perf_counter())

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    client = authorize(app.test_client(), token)
    out = {}
    try:
        for label in MIX:
            paths = [p for lab, p in requests if lab == label][:per_route]
            client.get(paths[0])  # first use: imports, caches
            times, sql["n"], sql["s"], size = [], 0, 0.0, 0
            profiler = cProfile.Profile()
            if cprofile:
                profiler.enable()
            for path in paths:
                t0 = time.perf_counter()
                r = client.get(path)
                times.append(1000 * (time.perf_counter() - t0))
                assert r.status_code == 200, (path, r.status_code)
                size += len(r.data)
            profiler.disable()
            text = ""
            if cprofile:
                buf = io.StringIO()
                pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(18)
                text = buf.getvalue()
                text = text[text.find("   ncalls") :].rstrip()
            out[label] = {
                "cprofile": text,
                "ms": statistics.median(times),
                "sql_n": sql["n"] / len(paths),
                "sql_ms": 1000 * sql["s"] / len(paths),
                "kib": size / len(paths) / 1024,
            }
    finally:
        app.extensions["sweeplab"].dispatcher.close()
        engine.dispose()
    return out


# --------------------------------------------------------------------------- one backend


def measure(
    label: str, database_url: str, redis_url: str, root: Path, args: argparse.Namespace
) -> dict[str, Any]:
    stack = Stack(root, label, database_url, redis_url, args.processes)
    try:
        client = stack.start(args.threads)
        status, job = client.call("POST", f"{API}/jobs", tiny_trial("load", args.epochs, 16))
        assert status == 201, job
        wait_job(client, job["id"], 60)
        job_ids, seed_s = stack.seed(client, job["id"], args.jobs)
        print(f"[{label}] seeded {len(job_ids)} jobs in {seed_s:.1f} s", flush=True)
        cursors, page = [], client.get(f"{API}/jobs")
        while page["next_cursor"] and len(cursors) < 20:
            cursors.append(page["next_cursor"])
            page = client.get(f"{API}/jobs?cursor={cursors[-1]}")

        lrs = [round(10 ** (-3 + 3 * i / max(args.trials - 1, 1)), 8) for i in range(args.trials)]
        body = {
            "name": f"load-{label}",
            # trials alone and trained (no packing, no reuse): their run time is the measure
            "base": {**tiny_trial("load", args.epochs, args.trial_samples), "reuse": False},
            "method": "grid",
            "parameters": {"hyperparameters.learning_rate": {"values": lrs}},
            "max_concurrency": args.max_concurrency,
            "packing": "off",
        }
        status, sweep = client.call("POST", f"{API}/sweeps", body)
        assert status == 201, sweep
        sweep_id = sweep["id"]
        submitted = time.time()
        print(f"[{label}] sweep of {args.trials} trials submitted; warm-up {args.warmup:g} s")
        time.sleep(args.warmup)
        requests = plan(random.Random(1), int(args.rate * args.seconds), job_ids, sweep_id, cursors)
        print(f"[{label}] load: {args.rate:g} req/s for {args.seconds:g} s", flush=True)
        since = stack.access_log.stat().st_size
        pids = stack.pids()
        cpu0 = cpu_of(pids)
        results, load_start, load_end = run_load(client, requests, args.rate, args.threads)
        cpu1 = cpu_of(pids)
        served = server_times(stack.access_log, since)
        trials = stack.trials(sweep_id)
        sweep_status = client.get(f"{API}/sweeps/{sweep_id}")["status"]
        if sweep_status == "running":
            client.call("POST", f"{API}/sweeps/{sweep_id}/cancel")
        profile = profile_routes(stack.env, stack.token, requests, cprofile=args.profile)
        return {
            "backend": label,
            "results": results,
            "served": served,
            "window": load_end - load_start,
            "cpu": {k: cpu1[k] - cpu0[k] for k in cpu1},
            "trials": trial_figures(trials, submitted, load_start, load_end),
            "sweep_status": sweep_status,
            "retried": client.retried,
            "profile": profile,
        }
    finally:
        stack.close()


def trial_figures(rows: list[Any], submitted: float, start: float, end: float) -> dict[str, Any]:
    """Medians of the trials run before the load (after the first 2 s) and within it."""

    def ts(value: datetime) -> float:
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()

    done = [r for r in rows if r.status == "succeeded" and r.started_at and r.finished_at]
    before = [r for r in done if ts(r.started_at) >= submitted + 2 and ts(r.finished_at) <= start]
    during = [r for r in done if ts(r.started_at) >= start and ts(r.finished_at) <= end]
    last = max((ts(r.finished_at) for r in done), default=start)

    def summary(group: list[Any], seconds: float) -> dict[str, float]:
        run = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in group]
        train = [1000 * (r.train_seconds or 0.0) for r in group]
        return {
            "n": len(group),
            "run_ms": statistics.median(run) if run else float("nan"),
            "run_p90": pct(run, 90),
            "train_ms": statistics.median(train) if train else float("nan"),
            "per_s": len(group) / seconds if seconds > 0 else float("nan"),
        }

    return {
        "before": summary(before, start - submitted - 2),
        "during": summary(during, min(end, last) - start),
        "trained_share": max(0.0, min(1.0, (last - start) / (end - start))),
        "finished": len(done),
    }


# --------------------------------------------------------------------------- report


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    for r in rows:
        res = r["results"]
        print(
            f"\n[{r['backend']}] {len(res)} requests in {r['window']:.1f} s "
            f"({len(res) / r['window']:.1f}/s); latency from when each was due, ms "
            "(server: gunicorn's own time for the request)"
        )
        print(
            f"{'route':<30}{'n':>6}{'p50':>8}{'p99':>8}{'max':>8}{'errors':>8}"
            f"{'srv p50':>9}{'srv p99':>9}"
        )
        by: dict[str, list[Result]] = defaultdict(list)
        for x in res:
            by[x[0]].append(x)
        for name in [*MIX, "all"]:
            group = res if name == "all" else by[name]
            lat = [x[1] for x in group]
            srv = [v for k, vs in r["served"].items() for v in vs] if name == "all" else []
            srv = srv or r["served"].get(name, [])
            errs = sum(1 for x in group if x[3])
            print(
                f"{name:<30}{len(group):>6}{pct(lat, 50):>8.1f}{pct(lat, 99):>8.1f}"
                f"{max(lat, default=0):>8.1f}{errs:>8}{pct(srv, 50):>9.1f}{pct(srv, 99):>9.1f}"
            )
        print(
            f"GETs sent again after a kept-alive connection was reset (not errors): {r['retried']}"
        )
        errors = [x[3] for x in res if x[3]]
        for e in sorted(set(errors))[:5]:
            print(f"  error x{errors.count(e)}: {e}")
        waits = [x[1] - x[2] for x in res]
        print(
            f"waiting for a free client thread (due -> sent): p50 {pct(waits, 50):.1f} ms, "
            f"p99 {pct(waits, 99):.1f} ms"
        )
        slow: dict[int, list[float]] = defaultdict(list)
        for x in res:
            if x[1] >= P99_MS:
                slow[int(x[4])].append(x[1])
        worst = sorted(slow.items(), key=lambda kv: -len(kv[1]))[:6]
        print(
            f"requests over {P99_MS:g} ms: {sum(len(v) for v in slow.values())} in "
            f"{len(slow)} of {int(r['window'])} seconds; worst seconds (s: n, max ms): "
            + ", ".join(f"{t}: {len(v)}, {max(v):.0f}" for t, v in sorted(worst))
        )
        cpu = dict(r["cpu"])
        ours = sum(v for k, v in cpu.items() if not k.startswith("machine"))
        cpu["other processes"] = cpu.pop("machine (all processes)") - ours
        print(
            f"CPU during the load, % of one core ({psutil.cpu_count()} cores): "
            + ", ".join(f"{k} {100 * v / r['window']:.0f}" for k, v in cpu.items())
        )
        print(
            f"API CPU per request: {1000 * r['cpu']['api (gunicorn)'] / len(res):.1f} ms; "
            f"load generator: {1000 * r['cpu']['load generator (this process)'] / len(res):.1f} ms"
        )
        print("each route in-process without load (Flask test client; per request):")
        print(f"{'route':<30}{'ms p50':>8}{'SQL stmts':>11}{'SQL ms':>8}{'KiB':>8}")
        for name, f in r["profile"].items():
            print(
                f"{name:<30}{f['ms']:>8.1f}{f['sql_n']:>11.1f}{f['sql_ms']:>8.1f}{f['kib']:>8.1f}"
            )
        for name, f in r["profile"].items():
            if f["cprofile"]:
                print(f"\ncProfile of {name} x40 in-process, by cumulative time\n{f['cprofile']}")
        t = r["trials"]
        b, d = t["before"], t["during"]
        print(
            f"trials: {t['finished']} succeeded; the sweep trained through "
            f"{100 * t['trained_share']:.0f}% of the load window (status then: "
            f"{r['sweep_status']})"
        )
        print(
            f"{'trials':<18}{'n':>6}{'run ms p50':>12}{'run ms p90':>12}{'fit ms p50':>12}{'/s':>8}"
        )
        for name, g in (("before the load", b), ("during the load", d)):
            print(
                f"{name:<18}{g['n']:>6}{g['run_ms']:>12.1f}{g['run_p90']:>12.1f}"
                f"{g['train_ms']:>12.1f}{g['per_s']:>8.1f}"
            )

    print(
        f"\nsummary: {args.jobs} jobs, {args.trials}-trial sweep (xor n={args.trial_samples}, "
        f"{args.epochs} epochs), {args.rate:g} req/s for {args.seconds:g} s"
    )
    print(
        f"{'backend':<12}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}{'run x':>8}{'fit x':>8}"
        f"{'trials/s x':>12}   targets (p99<{P99_MS:g}, 0 errors, slowdown<={SLOWDOWN})"
    )
    for r in rows:
        lat = [x[1] for x in r["results"]]
        errs = sum(1 for x in r["results"] if x[3])
        b, d = r["trials"]["before"], r["trials"]["during"]
        run_x, fit_x = d["run_ms"] / b["run_ms"], d["train_ms"] / b["train_ms"]
        rate_x = b["per_s"] / d["per_s"] if d["per_s"] else float("nan")
        met = [pct(lat, 99) < P99_MS, errs == 0, run_x <= SLOWDOWN and fit_x <= SLOWDOWN]
        print(
            f"{r['backend']:<12}{pct(lat, 50):>8.1f}{pct(lat, 99):>8.1f}{errs:>8}{run_x:>8.2f}"
            f"{fit_x:>8.2f}{rate_x:>12.2f}   "
            + ", ".join(
                f"{n} {'met' if m else 'MISSED'}"
                for n, m in zip(("p99", "errors", "slowdown"), met, strict=True)
            )
        )
    print(
        "run x / fit x: median trial run time (started -> finished) / train_seconds during "
        "the load over before it; trials/s x: the sweep's throughput before / during."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="of load")
    parser.add_argument("--warmup", type=float, default=15.0, help="s of training before it")
    parser.add_argument("--threads", type=int, default=16, help="of the load generator")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--n-samples", type=int, default=0, help="per trial (default 20,000; 60,000 --quick)"
    )
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument(
        "--processes",
        type=int,
        default=PROCESSES,
        help="worker processes (2: every core trains; 1: a core left to the API and the database)",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 100 trials, 15 s")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile each route in-process after the load"
    )
    parser.add_argument("--postgres", default=None, help="a server's URL: also on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--timeout", type=float, default=600.0, help="for the whole run (s)")
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.trials, args.seconds, args.warmup = 2000, 100, 15.0, 5.0

    def on_alarm(*_: object) -> None:
        raise TimeoutError(f"the run took longer than --timeout {args.timeout:g} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(args.timeout)))
    args.trial_samples = args.n_samples or (60_000 if args.quick else 20_000)
    print(
        f"{args.jobs} jobs, a {args.trials}-trial sweep (xor n_samples {args.trial_samples}, "
        f"4 tanh units, {args.epochs} epochs, max_concurrency {args.max_concurrency}), "
        f"{args.processes} worker processes; {args.rate:g} req/s for {args.seconds:g} s after "
        f"{args.warmup:g} s",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="sweeplab-load-"))
    stops: list[Callable[[], None]] = []
    rows: list[dict[str, Any]] = []
    try:
        port = free_port()
        redis_proc = start_redis(port, root / "redis", root / "redis.log")
        stops.append(lambda: (redis_proc.terminate(), redis_proc.wait(10)))
        redis_url = f"redis://127.0.0.1:{port}/0"
        if not args.no_sqlite:
            rows.append(measure("sqlite", f"sqlite:///{root / 'load.db'}", redis_url, root, args))
        if args.postgres:
            pg_url = create_pg_database(args.postgres, "sweeplab_load")
            try:
                rows.append(measure("postgresql", pg_url, redis_url, root, args))
            finally:
                drop_pg_database(args.postgres, pg_url)
    finally:
        signal.alarm(0)
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(rows, args)


if __name__ == "__main__":
    main()
