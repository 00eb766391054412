"""What subnormal floats cost a learning-rate sweep, and what flushing them changes.

The trials of the issue-15 sweep (moons, 10,000 samples, 2-64-64-2, batch 32,
SGD with momentum 0.9, 50 epochs, float32; rates 0.001 to 0.2) trained with
``fit`` one after the other, each twice in the same process: with the
trainer's default (subnormals flushed to zero, ``services/trainer/subnormals``)
and with the flush turned off (``SUPPORTED = False``), in alternating order.
Prints each trial's CPU seconds both ways, their ratio, and whether the two
runs' records (wall times aside) and final weights are identical.

Usage::

    python benchmarks/subnormal_speed.py [--rounds N] [--dtype float64]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.packing_service import RATES, sweep_body  # noqa: E402
from services.trainer import fit, load_dataset, subnormals  # noqa: E402


def _run(spec, data, flush: bool):
    subnormals.SUPPORTED = flush
    t0 = time.process_time()
    result = fit(spec, data=data)
    return time.process_time() - t0, result


def _same(a, b) -> bool:
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    return strip(a.history) == strip(b.history) and np.array_equal(
        a.network.params_flat, b.network.params_flat
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if not subnormals.SUPPORTED:
        print("this machine has no known floating-point environment layout: nothing to compare")
        return 0
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"BLAS {blas}; load average before: {os.getloadavg()}")
    base = sweep_body("off", 50, 10_000, "subnormals")["base"]
    base.pop("reuse")
    base["hyperparameters"]["dtype"] = args.dtype
    data = load_dataset(base["dataset"])
    print(f"{'rate':>6} {'flushed s':>9} {'plain s':>8} {'ratio':>6} identical")
    totals = {True: 0.0, False: 0.0}
    for rate in RATES:
        spec = copy.deepcopy(base)
        spec["hyperparameters"]["learning_rate"] = rate
        times: dict[bool, list[float]] = {True: [], False: []}
        same = True
        for i in range(args.rounds):
            runs = {}
            for flush in (True, False) if i % 2 == 0 else (False, True):
                seconds, runs[flush] = _run(spec, data, flush)
                times[flush].append(seconds)
            same = same and _same(runs[True], runs[False])
        on, off = statistics.median(times[True]), statistics.median(times[False])
        totals[True] += on
        totals[False] += off
        print(f"{rate:>6} {on:>9.3f} {off:>8.3f} {off / on:>5.2f}x {same}", flush=True)
    subnormals.SUPPORTED = True
    on, off = totals[True], totals[False]
    print(f"{'sweep':>6} {on:>9.3f} {off:>8.3f} {off / on:>5.2f}x")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
