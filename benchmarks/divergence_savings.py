"""Wall time a divergence-aware sweep saves: the same grid sweep with the divergence ceiling
on (the default) and off (``"skip_above_divergence": false``), through the real stack.

    .venv/bin/python benchmarks/divergence_savings.py            # SQLite, about 30 s
    .venv/bin/python benchmarks/divergence_savings.py --rounds 3

The sweep: moons (``--n-samples``, default 10,000), a 2-64-64-2 ReLU network, SGD at
batch 32 for ``--epochs`` (default 30) epochs, a grid of 10 learning rates from 0.01 to
300 for momentum 0 and 0.9 (20 trials), ``max_concurrency`` 2. Some rates diverge at
once (a non-finite loss in the first epoch), but others above them do not: a rate past
the edge can train all its epochs with a finite, useless loss (dead ReLUs, a loss that
bounces). Those are what the ceiling saves.

The API runs in this process; one Celery worker with 2 processes trains, on a private
Redis server and a throwaway SQLite database; MLflow off. The two modes alternate for
``--rounds``; it prints each round's wall time (submission to ``finished_at``), the
trials each mode trained, skipped and saw diverge, the time trained (sum of
``train_seconds``), and the median ratio off / on. Everything it starts is stopped
whatever happens.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.support import free_port  # noqa: E402
from benchmarks.sweep_overhead import Service  # noqa: E402
from services.stack.processes import start_redis  # noqa: E402

RATES = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0]


def sweep_body(args: argparse.Namespace, skip: bool) -> dict[str, Any]:
    return {
        "name": f"divergence-{'on' if skip else 'off'}",
        "base": {
            "reuse": False,  # every round trains: an identical earlier trial is not copied
            "dataset": {"name": "moons", "n_samples": args.n_samples, "seed": 0},
            "architecture": {
                "layers": [{"units": 64, "activation": "relu"}, {"units": 64, "activation": "relu"}]
            },
            "hyperparameters": {
                "learning_rate": 0.1,
                "optimizer": "sgd",
                "momentum": 0.9,
                "epochs": args.epochs,
                "batch_size": 32,
                "seed": 0,
            },
        },
        "method": "grid",
        "parameters": {
            "hyperparameters.momentum": {"values": [0.0, 0.9]},
            "hyperparameters.learning_rate": {"values": RATES},
        },
        "max_concurrency": 2,
        "packing": "off",  # the ceiling's saving alone
        "skip_above_divergence": skip,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=900.0, help="per sweep (s)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sweeplab-divergence-"))
    port = free_port()
    redis = start_redis(port, root / "redis", root / "redis.log")
    service = None
    try:
        redis_url = f"redis://127.0.0.1:{port}/0"
        service = Service(root, f"sqlite:///{root / 'bench.db'}", redis_url, "")
        service.start_worker()
        service.run_sweep(sweep_body(args, True) | {"name": "warm-up"}, args.timeout)
        rows: dict[bool, list[tuple[float, dict[str, int], float]]] = {True: [], False: []}
        for r in range(args.rounds):
            for skip in (True, False) if r % 2 == 0 else (False, True):
                wall, trials = service.run_sweep(sweep_body(args, skip), args.timeout)
                counts: dict[str, int] = {}
                for t in trials:
                    counts[t.status] = counts.get(t.status, 0) + 1
                trained = sum(t.train_seconds or 0.0 for t in trials)
                rows[skip].append((wall, counts, trained))
                print(
                    f"round {r + 1}, ceiling {'on ' if skip else 'off'}: {wall:6.2f} s wall, "
                    f"{trained:6.2f} s trained, trials {dict(sorted(counts.items()))}",
                    flush=True,
                )
        on = statistics.median(w for w, _, _ in rows[True])
        off = statistics.median(w for w, _, _ in rows[False])
        print(
            f"\n{len(RATES) * 2} trials (moons n={args.n_samples}, 2-64-64-2 relu, SGD, "
            f"{args.epochs} epochs, momentum 0 and 0.9 x {len(RATES)} rates 0.01..300), "
            "2 worker processes, SQLite"
        )
        print(f"median wall time: ceiling on {on:.2f} s, off {off:.2f} s ({off / on:.2f}x)")
        print(f"saved: {off - on:.2f} s ({(off - on) / off:.0%} of the sweep without the ceiling)")
    finally:
        if service is not None:
            service.close()
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
