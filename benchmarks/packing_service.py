"""Trial packing through the real stack: a learning-rate grid sweep packed vs unpacked.

    .venv/bin/python benchmarks/packing_service.py                    # the issue's figure
    .venv/bin/python benchmarks/packing_service.py --packing auto,off,8,2 --rounds 2
    .venv/bin/python benchmarks/packing_service.py --quick            # 10 epochs, 2,000 samples
    .venv/bin/python benchmarks/packing_service.py --layers 64        # the tiny 2-64-2 network

What it measures (issue 15, "Figures: service level"): an 8-rate grid sweep of a small
network (moons, 10,000 samples, 2-64-64-2, batch 32, SGD with momentum 0.9, 50 epochs,
float32) submitted through the Flask app in-process, trained by one Celery worker
with 2 processes (one BLAS thread each) on a private Redis server and a SQLite
database, MLflow off: wall time from the submission to the sweep's ``finished_at``,
for each ``"packing"`` setting, in alternating rounds (the same workers, one run).
``max_concurrency`` is 8, so every setting may train all 8 trials at once: "off"
trains them 2 at a time (one per process), "auto" (2 processes) in two packs of 4,
``8`` in one pack of 8 (one process idle), ``2`` in four packs of 2.

It checks that every setting gives the same leaderboard: each trial's status,
parameters, best epoch and objective, and its per-epoch numbers (everything but wall
times), bit for bit.

Everything it starts (Redis, the worker) is stopped whatever happens; ``--timeout``
bounds the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import psutil  # noqa: E402
from sqlalchemy import select  # noqa: E402

from api import create_app  # noqa: E402
from benchmarks.support import free_port, start_worker, stop_workers, wait_for  # noqa: E402
from services.config import Settings  # noqa: E402
from services.db import make_engine, make_session_factory, upgrade  # noqa: E402
from services.db.models import Job, JobMetric, Sweep  # noqa: E402
from services.stack.processes import start_redis  # noqa: E402
from services.sweeps.packing import NewTrials, plan  # noqa: E402
from tests.auth_support import authorize, new_token  # noqa: E402

PROCESSES = 2
RATES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]


def sweep_body(
    packing: Any, epochs: int, n_samples: int, name: str, layers: tuple[int, ...] = (64, 64)
) -> dict[str, Any]:
    return {
        "name": name,
        "base": {
            "reuse": False,  # each sweep trains: an identical earlier trial would be copied
            "dataset": {"name": "moons", "n_samples": n_samples, "noise": 0.2, "seed": 0},
            "architecture": {
                "layers": [{"units": units} for units in layers],
                "output_activation": "softmax",
            },
            "hyperparameters": {
                "learning_rate": 0.01,
                "epochs": epochs,
                "batch_size": 32,
                "momentum": 0.9,
            },
        },
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": RATES}},
        "max_concurrency": len(RATES),
        "packing": packing,
    }


class Service:
    """SQLite, the API in-process, one Celery worker with 2 processes, MLflow off."""

    def __init__(self, root: Path, redis_url: str):
        database_url = f"sqlite:///{root / 'sweeplab.db'}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MLFLOW_TRACKING_URI": "",
            "SWEEPLAB_QUEUE": f"packing-{uuid.uuid4().hex[:8]}",
            "SWEEPLAB_BLAS_THREADS": "1",
            "SWEEPLAB_PACK_PROCESSES": str(PROCESSES),
            "PYTHONPATH": str(REPO),
        }
        upgrade(database_url)
        self.settings = Settings.from_env(self.env)
        self.engine = make_engine(database_url)
        self.sessions = make_session_factory(self.engine)
        self.app = create_app(self.settings)
        self.client = authorize(self.app.test_client(), new_token(self.sessions))
        queue = self.settings.celery_queue
        log = root / "worker.log"
        self.worker = start_worker(self.env, queue, log, f"packing-{queue}", PROCESSES)
        self.overlap: dict[str, float] = {}

    def close(self) -> None:
        stop_workers([self.worker])
        self.app.extensions["sweeplab"].dispatcher.close()
        self.app.extensions["sweeplab"].engine.dispose()
        self.engine.dispose()

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the worker's pool processes (the live ones)."""
        total = 0.0
        for proc in psutil.Process(self.worker.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def run_sweep(self, body: dict[str, Any], timeout: float) -> tuple[float, str]:
        """Submit; (seconds from the submission to the sweep's finished_at, its id)."""
        start = time.time()
        response = self.client.post("/api/v1/sweeps", json=body)
        assert response.status_code == 201, response.get_json()
        sweep_id = response.get_json()["id"]

        def done() -> Sweep | None:
            with self.sessions() as session:
                sweep = session.get(Sweep, sweep_id)
                session.commit()
            return sweep if sweep is not None and sweep.status != "running" else None

        sweep = wait_for(done, timeout, f"sweep {sweep_id}", interval=0.1)
        finished = sweep.finished_at
        if finished.tzinfo is None:
            finished = finished.replace(tzinfo=timezone.utc)
        return finished.timestamp() - start, sweep_id

    def board(self, sweep_id: str) -> tuple[list[Any], list[Any]]:
        """(the trials as a leaderboard shows them, their epochs without wall times);
        ``self.overlap[sweep_id]``: seconds during which both processes trained."""
        with self.sessions() as session:
            jobs = list(
                session.scalars(
                    select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_index)
                )
            )
            trials = [
                (j.trial_index, j.status, j.params, j.best_epoch, j.objective, j.epochs_done)
                for j in jobs
            ]
            index = {j.id: j.trial_index for j in jobs}
            rows = sorted(
                (index[m.job_id], m.epoch, {k: v for k, v in m.metrics.items() if k != "seconds"})
                for m in session.scalars(select(JobMetric).where(JobMetric.job_id.in_(index)))
            )
            session.commit()
        spans: dict[str, list[float]] = {}
        for j in jobs:  # each process's training, from its first start to its last end
            start, end = j.started_at.timestamp(), j.finished_at.timestamp()
            span = spans.setdefault(j.worker or "", [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
        ends = sorted(spans.values())
        both = max(0.0, min(e for _, e in ends) - max(s for s, _ in ends)) if len(ends) > 1 else 0
        self.overlap[sweep_id] = both
        return trials, rows


def planned(packing: Any, layers: tuple[int, ...]) -> list[int]:
    """The packs the scheduler makes of the sweep's 8 trials (services.sweeps.packing)."""
    trials = [(str(i), "key", (2, *layers, 2), 32) for i in range(len(RATES))]
    units = plan(NewTrials(packing, len(RATES), len(RATES), trials), PROCESSES)
    return [len(unit) for unit in units]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packing", default="auto,off", help="settings, comma-separated")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--layers", default="64,64", help="hidden widths (2-64-2: --layers 64)")
    parser.add_argument("--quick", action="store_true", help="10 epochs, 2,000 samples")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.n_samples = 10, 2000
    settings = [int(p) if p.isdigit() else p for p in args.packing.split(",")]
    layers = tuple(int(units) for units in args.layers.split(","))

    def on_alarm(*_: object) -> None:
        raise TimeoutError(f"the run took longer than --timeout {args.timeout:g} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(args.timeout)))

    root = Path(tempfile.mkdtemp(prefix="sweeplab-packing-"))
    redis_proc = None
    service = None
    try:
        port = free_port()
        redis_proc = start_redis(port, root / "redis", root / "redis.log")
        service = Service(root, f"redis://127.0.0.1:{port}/0")
        # warm-up: every process imports, builds its dataset cache, packs once
        for packing in ("off", "auto"):
            body = sweep_body(packing, 2, args.n_samples, "warm-up", layers)
            service.run_sweep(body, args.timeout)
        walls: dict[Any, list[float]] = {p: [] for p in settings}
        cpus: dict[Any, list[float]] = {p: [] for p in settings}
        boards: dict[Any, tuple[list[Any], list[Any]]] = {}
        for r in range(args.rounds):
            for packing in settings if r % 2 == 0 else list(reversed(settings)):
                name = f"packing-{packing}-{r}"
                body = sweep_body(packing, args.epochs, args.n_samples, name, layers)
                cpu = service.cpu_seconds()
                wall, sweep_id = service.run_sweep(body, args.timeout)
                cpus[packing].append(service.cpu_seconds() - cpu)
                walls[packing].append(wall)
                boards[packing] = service.board(sweep_id)
                print(
                    f"round {r}: packing {packing!s:>4}: {wall:7.2f} s wall, "
                    f"{cpus[packing][-1]:7.2f} s CPU, both processes training "
                    f"{service.overlap[sweep_id]:5.2f} s (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        reference = boards[settings[-1]]
        same = all(b == reference for b in boards.values())
        base = statistics.median(walls["off"]) if "off" in walls else None
        print()
        print(
            f"8-rate grid sweep, moons {args.n_samples:,} samples, "
            f"2-{'-'.join(map(str, layers))}-2, batch 32, "
            f"{args.epochs} epochs, float32; one worker, {PROCESSES} processes, SQLite, "
            f"MLflow off; median of {args.rounds} round(s)"
        )
        base_cpu = statistics.median(cpus["off"]) if "off" in cpus else None
        head = ("packing", 8), ("packs", 16), ("wall s", 8), ("vs off", 7), ("CPU s", 8)
        print(" ".join(f"{name:>{width}}" for name, width in head), f"{'vs off':>7}")
        for packing in settings:
            wall, cpu = statistics.median(walls[packing]), statistics.median(cpus[packing])
            ratio = f"{base / wall:6.2f}x" if base else "      -"
            cpu_ratio = f"{base_cpu / cpu:6.2f}x" if base_cpu else "      -"
            packs = "+".join(map(str, planned(packing, layers)))
            print(f"{packing!s:>8} {packs:>16} {wall:8.2f} {ratio:>7} {cpu:8.2f} {cpu_ratio:>7}")
        statuses = sorted({t[1] for t in reference[0]})
        print(f"leaderboards and per-epoch numbers identical across settings: {same} ({statuses})")
        return 0 if same else 1
    finally:
        signal.alarm(0)
        if service is not None:
            service.close()
        if redis_proc is not None:
            redis_proc.terminate()
            with contextlib.suppress(Exception):
                redis_proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
