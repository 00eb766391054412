"""Trial packing: k trials trained as one pack (``fit_packed``) against k solo ``fit`` runs.

For a small (2-64-64-2, batch 32), a medium (64-128-10, batch 64) and a
large (784-256-10, batch 128) network (and, to place the rule's threshold, a
tiny 2-64-2 at batch 32 and a mid 64-256-256-10 at batch 64), float32, one
BLAS thread: the k trials
of a learning-rate sweep (each its own rate and seed) trained one after the
other with ``fit``, and as one pack with ``fit_packed``, k = 2, 4, 8, 16. The
throughput ratio is solo time / packed time (CPU time of this process, which
on a busy machine leaves out what other processes took), the median over
``--repeats`` rounds; each round runs solo and packed back to back, in
alternating order, so that a busy spell hits both. The load average is
printed before and after.

``--leave`` measures how a trial leaves the pack: ``"drop"`` (compact the
stack) against ``"mask"`` (keep its row computing at rate 0), with half of
the trials stopped by their callback after the first quarter of the epochs.

Usage::

    python benchmarks/packing_speed.py [--quick] [--repeats N] [--leave]

Exits with status 1 if the small network's ratio at k = 8 is below 3, or if
``packing_pays`` packs a case the table measured slower than solo.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.trainer import dataset_from_arrays, fit  # noqa: E402
from services.trainer.packed import fit_packed, packing_pays  # noqa: E402
from services.trainer.packed_rule import step_work  # noqa: E402

NETWORKS = [
    # (name, layer sizes, batch size, training rows, epochs)
    ("tiny", [2, 64, 2], 32, 4096, 5),  # the first measurement
    ("small", [2, 64, 64, 2], 32, 4096, 5),
    ("medium", [64, 128, 10], 64, 4096, 5),
    ("mid", [64, 256, 256, 10], 64, 4096, 2),
    ("large", [784, 256, 10], 128, 2048, 2),
]
KS = (2, 4, 8, 16)
TARGET_SMALL_K8 = 3.0


def synthetic(sizes: list[int], n: int, seed: int = 0):
    """Gaussian inputs labelled by a random linear teacher; 20% more rows to validate."""
    rng = np.random.default_rng(seed)
    n_val = n // 5
    X = rng.standard_normal((n + n_val, sizes[0])).astype(np.float32)
    y = np.argmax(X @ rng.standard_normal((sizes[0], sizes[-1])), axis=1)
    return dataset_from_arrays(X[:n], y[:n], X[n:], y[n:], task="classification")


def sweep(sizes, batch, epochs, k) -> list[dict]:
    """k trials of a learning-rate sweep (log-spaced rates, one seed each)."""
    rates = np.geomspace(1e-3, 0.3, k) if k > 1 else [0.03]
    return [
        {
            "dataset": {"name": "digits"},  # replaced by data=
            "architecture": {
                "layers": [{"units": u, "activation": "relu"} for u in sizes[1:-1]],
                "output_activation": "softmax",
            },
            "hyperparameters": {
                "learning_rate": float(lr),
                "batch_size": batch,
                "epochs": epochs,
                "dtype": "float32",
                "seed": i,
            },
        }
        for i, lr in enumerate(rates)
    ]


def cpu_seconds(run) -> float:
    t0 = time.process_time()
    run()
    return time.process_time() - t0


def measure(sizes, batch, n, epochs, k, repeats) -> tuple[float, float, float]:
    """(median solo seconds, median packed seconds, median ratio) for k trials."""
    data = synthetic(sizes, n)
    specs = sweep(sizes, batch, epochs, k)
    warm = [dict(s, hyperparameters=dict(s["hyperparameters"], epochs=1)) for s in specs]
    fit_packed(warm, data=data)
    fit(warm[0], data=data)

    def solo():
        for s in specs:
            fit(s, data=data)

    def packed():
        fit_packed(specs, data=data)

    return alternating(solo, packed, repeats)


def alternating(solo, packed, repeats: int) -> tuple[float, float, float]:
    """(median CPU seconds of ``solo()``, of ``packed()``, median ratio) over ``repeats``
    rounds, each running both back to back in alternating order."""
    solos, packs, ratios = [], [], []
    for i in range(repeats):
        if i % 2 == 0:
            a, b = cpu_seconds(solo), cpu_seconds(packed)
        else:
            b, a = cpu_seconds(packed), cpu_seconds(solo)
        solos.append(a)
        packs.append(b)
        ratios.append(a / b)
    return statistics.median(solos), statistics.median(packs), statistics.median(ratios)


def measure_leave(repeats: int) -> None:
    """Drop against mask: 8 trials of the small network, 4 of them stopped by their
    callback after epoch 2 of 8."""
    name, sizes, batch, n, _ = next(net for net in NETWORKS if net[0] == "small")
    data = synthetic(sizes, n)
    specs = sweep(sizes, batch, 8, 8)
    stop = [(lambda r: r["epoch"] >= 2) if i % 2 else None for i in range(8)]
    times: dict[str, list[float]] = {"drop": [], "mask": []}
    for i in range(repeats):
        for leave in ("drop", "mask") if i % 2 == 0 else ("mask", "drop"):
            times[leave].append(
                cpu_seconds(
                    lambda leave=leave: fit_packed(specs, data=data, on_epoch=stop, leave=leave)
                )
            )
    drop, mask = statistics.median(times["drop"]), statistics.median(times["mask"])
    print(f"\nleaving the pack ({name}, k=8, 4 stopped after epoch 2 of 8, median of {repeats}):")
    print(f"  drop {drop:.3f} s   mask {mask:.3f} s   mask / drop = {mask / drop:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, k up to 8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--leave", action="store_true", help="also measure drop vs mask")
    args = parser.parse_args()
    threadpool_limits(1)
    repeats = 3 if args.quick else args.repeats
    ks = KS[:3] if args.quick else KS
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"BLAS {blas}; load average before: {os.getloadavg()}")
    print(
        f"{'network':<8} {'sizes':<16} {'batch':>5} {'work':>6} {'k':>3} {'solo s':>8} "
        f"{'packed s':>9} {'ratio':>6} rule"
    )
    failures = []
    for name, sizes, batch, n, epochs in NETWORKS:
        for k in ks:
            solo, packed, ratio = measure(sizes, batch, n, epochs, k, repeats)
            pays = packing_pays(sizes, batch, k)
            work = step_work(sizes, batch) / 1e6
            print(
                f"{name:<8} {'-'.join(map(str, sizes)):<16} {batch:>5} {work:>5.2f}M {k:>3} "
                f"{solo:>8.3f} {packed:>9.3f} {ratio:>6.2f} {'pack' if pays else 'solo'}",
                flush=True,
            )
            if pays and ratio < 1.0:
                failures.append(f"the rule packs {name} k={k}, measured {ratio:.2f}x")
            if name == "small" and k == 8 and ratio < TARGET_SMALL_K8:
                failures.append(f"small k=8: {ratio:.2f}x < {TARGET_SMALL_K8}x")
    if args.leave:
        measure_leave(repeats)
    print(f"load average after: {os.getloadavg()}")
    for failure in failures:
        print("MISSED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
