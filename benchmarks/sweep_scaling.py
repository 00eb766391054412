"""Sweep scaling: 8 equal trials on 1 vs 2 worker processes, and service vs a bare Pool.

    .venv/bin/python benchmarks/sweep_scaling.py            # the full measurement
    .venv/bin/python benchmarks/sweep_scaling.py --quick    # a smoke run (seconds)

What it measures (wall-clock from submitting the sweep to its last trial ending):

- speed-up: the same sweep (``max_concurrency`` = number of trials) with a
  Celery worker of ``--concurrency 1`` and then ``--concurrency 2``; target >= 1.8x.
- overhead: the 2-process service time against ``multiprocessing.Pool(2)``
  calling the trainer directly on the same 8 specs; target <= 10%.

Trials differ only in their seed, so they do the same work. Each takes a few
seconds. Needs Redis (``REDIS_URL``, default local); the database is a fresh
SQLite file unless ``--database-url`` names another (empty) one. Workers use
one BLAS thread each, as in production.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def trial_spec(epochs: int, n_samples: int) -> dict[str, Any]:
    return {
        "name": "scaling",
        "dataset": {"name": "blobs", "n_samples": n_samples, "seed": 0},
        "architecture": {"layers": [{"units": 64, "activation": "relu"}]},
        "hyperparameters": {"learning_rate": 0.05, "epochs": epochs, "batch_size": 32},
    }


def sweep_body(n_trials: int, epochs: int, n_samples: int) -> dict[str, Any]:
    return {
        "name": "scaling",
        "base": {**trial_spec(epochs, n_samples), "reuse": False},  # each run trains
        "method": "grid",
        "parameters": {"hyperparameters.seed": {"values": list(range(n_trials))}},
        "max_concurrency": n_trials,
        "packing": "off",  # one process per trial: the scaling is about processes
    }


def _fit(spec: dict[str, Any]) -> float:
    from services.trainer import fit

    return fit(spec).seconds


def bare_pool(specs: list[dict[str, Any]], processes: int) -> float:
    """Wall time of ``Pool(processes).map(fit, specs)`` (pool start-up included)."""
    ctx = multiprocessing.get_context("fork")
    start = time.perf_counter()
    with ctx.Pool(processes) as pool:
        pool.map(_fit, specs, chunksize=1)
    return time.perf_counter() - start


class Service:
    """A database, the API (in-process) and one Celery worker with ``concurrency`` processes."""

    def __init__(self, database_url: str, redis_url: str, workdir: Path):
        from api import create_app
        from services.config import Settings
        from services.db import upgrade

        self.workdir = workdir
        self.queue = f"sweeplab-bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SWEEPLAB_QUEUE": self.queue,
            "MLFLOW_TRACKING_URI": "",
            "SWEEPLAB_BLAS_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        upgrade(database_url)
        self.settings = Settings.from_env(self.env)
        self.app = create_app(self.settings)
        self.client = self.app.test_client()
        self.worker: subprocess.Popen[bytes] | None = None

    def start_worker(self, concurrency: int) -> None:
        self.stop_worker()
        log = self.workdir / f"worker-{concurrency}.log"
        celery = str(Path(sys.executable).with_name("celery"))
        argv = [
            *(celery, "-A", "worker.app", "worker", "--concurrency", str(concurrency)),
            *("-P", "prefork", "-Q", f"{self.queue},{self.queue}.control"),
            *("-n", f"bench-{concurrency}@%h"),
            *("-l", "INFO"),  # the same worker options as `make up`
        ]
        with open(log, "wb") as out:
            self.worker = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        # Long-lived workers have imported and warmed up long before a sweep comes (and
        # the bare Pool forks from a warmed parent): one tiny trial per process first.
        self.run_sweep(sweep_body(2 * concurrency, 1, 2_000))

    def stop_worker(self) -> None:
        if self.worker is not None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()
            self.worker = None

    def run_sweep(self, body: dict[str, Any]) -> tuple[float, float]:
        """Submit, wait for the end; returns (wall seconds, summed trainer seconds)."""
        start = time.time()
        response = self.client.post("/api/v1/sweeps", json=body)
        assert response.status_code == 201, response.get_json()
        sweep_id = response.get_json()["id"]
        # Poll as a user would (each poll costs CPU on the cores the trials use); the
        # end is the sweep's own finished_at, so the polling period adds no error.
        while True:
            sweep = self.client.get(f"/api/v1/sweeps/{sweep_id}").get_json()
            if sweep["status"] != "running":
                break
            time.sleep(0.5)
        finished = datetime.fromisoformat(sweep["timings"]["finished_at"]).timestamp()
        wall = finished - start
        trials = self.client.get(f"/api/v1/sweeps/{sweep_id}/trials?limit=200").get_json()
        assert all(t["status"] == "succeeded" for t in trials["items"]), trials
        return wall, sum(t["timings"]["train_seconds"] or 0.0 for t in trials["items"])

    def close(self) -> None:
        self.stop_worker()
        self.app.extensions["sweeplab"].dispatcher.close()
        self.app.extensions["sweeplab"].engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--n-samples", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    parser.add_argument("--quick", action="store_true", help="tiny trials: a smoke run")
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.n_samples, args.rounds = 5, 8_000, 1

    workdir = Path(tempfile.mkdtemp(prefix="sweeplab-bench-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    specs = [dict(trial_spec(args.epochs, args.n_samples)) for _ in range(args.trials)]
    for seed, spec in enumerate(specs):
        spec["hyperparameters"] = {**spec["hyperparameters"], "seed": seed}
    body = sweep_body(args.trials, args.epochs, args.n_samples)

    one = _fit(specs[0])
    print(
        f"{args.trials} trials: blobs n={args.n_samples}, 64 relu units, {args.epochs} epochs; "
        f"one trial trains in {one:.2f}s on one core"
    )
    # Rounds alternate the three set-ups so that a noisy neighbour hits each alike;
    # the figures are medians over the rounds.
    t1s, t2s, pools, train1s, train2s = [], [], [], [], []
    service = Service(database_url, args.redis_url, workdir)
    try:
        for _ in range(args.rounds):
            service.start_worker(1)
            t1, train1 = service.run_sweep(body)
            service.start_worker(2)
            t2, train2 = service.run_sweep(body)
            pool = bare_pool(specs, 2)
            print(f"round: 1 process {t1:.2f}s, 2 processes {t2:.2f}s, Pool(2) {pool:.2f}s")
            t1s.append(t1), t2s.append(t2), pools.append(pool)
            train1s.append(train1), train2s.append(train2)
    finally:
        service.close()
        shutil.rmtree(workdir, ignore_errors=True)
    t1, t2, pool = statistics.median(t1s), statistics.median(t2s), statistics.median(pools)
    train1, train2 = statistics.median(train1s), statistics.median(train2s)

    print(f"\nmedians over {args.rounds} rounds")
    print(f"{'setup':<40}{'wall s':>10}{'train s':>10}")
    print(f"{'service, 1 worker process':<40}{t1:>10.2f}{train1:>10.2f}")
    print(f"{'service, 2 worker processes':<40}{t2:>10.2f}{train2:>10.2f}")
    print(f"{'multiprocessing.Pool(2) + fit':<40}{pool:>10.2f}")
    print(f"speed-up 1 -> 2 processes: {t1 / t2:.2f}x (target >= 1.8x)")
    print(f"service overhead vs bare Pool(2): {100 * (t2 / pool - 1):+.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
