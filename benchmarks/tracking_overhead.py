"""What does the MLflow mirror cost? The demo sweep with mirroring off, then on.

Starts its own Redis, MLflow server (services.mirror.server), SQLite database
and Celery worker (2 processes) under a temporary directory, then runs the
demo sweep (examples/lr_sweep.json) ``--rounds`` times in each mode,
alternating off/on so that machine noise hits both alike. Prints, per mode,
the median of:

* job wall: mean over trials of finished_at - started_at (what a job costs);
* sweep wall: sweep created -> sweep done;
* mirror lag (on only): sweep done -> its parent run closed in MLflow, every
  trial mirrored;

and the ratios on/off. Usage::

    python benchmarks/tracking_overhead.py [--rounds 3] [--workers 2] [--sweep FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.celery_app import Dispatcher  # noqa: E402
from services.config import Settings  # noqa: E402
from services.db import Job, Sweep, make_engine, make_session_factory, upgrade  # noqa: E402
from services.mirror import server as mlflow_server  # noqa: E402
from services.specs import validate_sweep  # noqa: E402
from services.stack import start_redis  # noqa: E402
from services.sweeps.scheduler import create_sweep  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_worker(env: dict[str, str], workers: int, log: Path) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--concurrency",
        str(workers),
        "--loglevel",
        "WARNING",
        "--hostname",
        f"bench-{os.getpid()}-{time.monotonic_ns()}@%h",
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_worker(settings: Settings, timeout: float = 60) -> None:
    app = Dispatcher(settings).celery
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=1.0):
            return
    raise TimeoutError("worker did not answer")


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, in MiB (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(
                next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def run_sweep(
    settings: Settings, sessions, spec: dict, mirror: bool, pids: list[int]
) -> dict[str, float]:
    sweep_in = validate_sweep(spec, settings.limits)
    cpu0 = [tree_cpu_s(pid) for pid in pids]
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=sweep_in, limits=settings.limits)
        sweep_id = sweep.id
        session.commit()
    Dispatcher(settings).enqueue_jobs(ids)
    done_at = mirrored_at = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        with sessions() as session:
            row = session.get(Sweep, sweep_id)
            status, synced = row.status, row.mlflow_synced_status
            session.rollback()
        now = time.monotonic()
        if status != "running" and done_at is None:
            done_at = now
        if done_at is not None and (not mirror or synced == status):
            mirrored_at = now
            break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"sweep {sweep_id} did not finish (mirror={mirror})")
    cpu = [tree_cpu_s(pid) - before for pid, before in zip(pids, cpu0, strict=True)]
    with sessions() as session:
        row = session.get(Sweep, sweep_id)
        jobs = session.query(Job).filter(Job.sweep_id == sweep_id).all()
        walls = [
            (j.finished_at - j.started_at).total_seconds()
            for j in jobs
            if j.started_at and j.finished_at
        ]
        train = [j.train_seconds for j in jobs if j.train_seconds]
        result = {
            "job_wall": statistics.fmean(walls),
            "train": statistics.fmean(train) if train else float("nan"),
            "sweep_wall": (row.finished_at - row.created_at).total_seconds(),
            "mirror_lag": mirrored_at - done_at,
            "trials": len(jobs),
            "worker_cpu": cpu[0],
            "mlflow_cpu": cpu[1],
        }
        if mirror:
            lagging = [j.id for j in jobs if j.mlflow_synced_status != j.status]
            assert not lagging, f"trials not mirrored: {lagging}"
        session.rollback()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sweep", default=str(ROOT / "examples" / "lr_sweep.json"))
    args = parser.parse_args()
    spec = json.loads(Path(args.sweep).read_text())
    spec["base"]["reuse"] = False  # every round trains: an identical earlier trial is not copied
    spec["packing"] = "off"  # trials alone, as the figures before packing were taken

    tmp = Path(tempfile.mkdtemp(prefix="sweeplab-bench-"))
    redis_port, mlflow_port = free_port(), free_port()
    redis_proc = start_redis(redis_port, tmp / "redis", tmp / "redis.log")
    t0 = time.monotonic()
    ml_proc = mlflow_server.start_server("127.0.0.1", mlflow_port, tmp / "mlflow")
    procs = [redis_proc, ml_proc]
    try:
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        mlflow_server.wait_ready(mlflow_url, timeout=120, proc=ml_proc)
        print(
            f"MLflow server ready in {time.monotonic() - t0:.1f} s, "
            f"RSS {tree_rss_mib(ml_proc.pid):.0f} MiB (all its processes)",
            flush=True,
        )
        db_url = f"sqlite:///{tmp / 'bench.db'}"
        upgrade(db_url)
        sessions = make_session_factory(make_engine(db_url))
        base_env = dict(
            os.environ,
            DATABASE_URL=db_url,
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            SWEEPLAB_HOME=str(tmp),
            PYTHONPATH=str(ROOT),
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
        )
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for rnd in range(args.rounds):
            for mode in ("off", "on"):
                env = dict(base_env, MLFLOW_TRACKING_URI=mlflow_url if mode == "on" else "")
                settings = Settings.from_env(env)
                worker = start_worker(env, args.workers, tmp / f"worker-{mode}.log")
                try:
                    wait_worker(settings)
                    run_spec = dict(spec, experiment=f"bench-{rnd}", name=f"bench-{mode}-{rnd}")
                    pids = [worker.pid, ml_proc.pid]
                    res = run_sweep(settings, sessions, run_spec, mode == "on", pids)
                finally:
                    stop(worker)
                results[mode].append(res)
                print(
                    f"round {rnd} mirror {mode:3}: job wall {res['job_wall']:.3f} s, "
                    f"sweep wall {res['sweep_wall']:.2f} s, mirror lag {res['mirror_lag']:.2f} s, "
                    f"CPU workers {res['worker_cpu']:.2f} s + MLflow {res['mlflow_cpu']:.2f} s",
                    flush=True,
                )

        def med(mode: str, key: str) -> float:
            return statistics.median(r[key] for r in results[mode])

        print()
        print(
            f"{'median over ' + str(args.rounds) + ' rounds':28} {'off':>9} {'on':>9} {'on/off':>8}"
        )
        rows = (
            ("job_wall", "job wall (s)"),
            ("sweep_wall", "sweep wall (s)"),
            ("worker_cpu", "worker CPU per sweep (s)"),
            ("mlflow_cpu", "MLflow server CPU (s)"),
        )
        for key, label in rows:
            off, on = med("off", key), med("on", key)
            shown = f"{on / off:8.3f}" if off > 0.05 else f"{'':8}"
            print(f"{label:28} {off:9.3f} {on:9.3f} {shown}")
        print(f"{'mirror lag after sweep (s)':28} {'':9} {med('on', 'mirror_lag'):9.2f}")
        print(f"MLflow server RSS after the runs: {tree_rss_mib(ml_proc.pid):.0f} MiB")
        ratio = med("on", "job_wall") / med("off", "job_wall")
        print(f"\ntracking overhead on a job's wall time: {100 * (ratio - 1):+.1f}%")
        ratio = med("on", "sweep_wall") / med("off", "sweep_wall")
        print(f"tracking overhead on the sweep's wall time: {100 * (ratio - 1):+.1f}%")
        extra = (med("on", "worker_cpu") + med("on", "mlflow_cpu")) - med("off", "worker_cpu")
        print(
            f"CPU the mirror costs per sweep (workers + server): {extra:.2f} s "
            f"({100 * extra / med('off', 'worker_cpu'):.0f}% of the sweep's worker CPU)"
        )
    finally:
        for proc in reversed(procs):
            mlflow_server.stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
