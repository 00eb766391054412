"""Training speed: sweeplab's NumPy trainer against PyTorch eager on the CPU.

Both train the same MLP (ReLU hidden layers, softmax cross-entropy, plain
SGD) on the same synthetic data in float32 with one BLAS / intra-op thread,
shuffling every epoch and evaluating the validation set after every epoch.
Samples per second count training samples (validation time included) per
second of the process's CPU time (``time.process_time``; with one thread this
is wall time minus the time other processes on a shared machine took from
us), best of ``--repeats`` (default 5) interleaved rounds: each round runs
every entry of a network once, so that a busy spell hits them all.

Printed for three sizes: sweeplab's rate in the default mode
(``train_metrics="after_epoch"``: the training accuracy after the epoch on a
fixed 1,024-row sample of the training set) beside the ``"running"`` mode
(the accuracy over the epoch's batches, no pass after the epoch, like the
PyTorch loop), what the default costs over the running mode, PyTorch's rate
and both modes' ratios to it, and, for reference, the rate of a tuned eager
PyTorch loop (``torch_tuned_rate``). Then per network the single-thread
float32 GEMM peak (best of the rounds, measured between the runs) and the
share of it each mode reaches (matrix-product FLOPs of training and
validation). Exits with status 1 when a target is missed: the default within
5% of the running mode everywhere; the default mode at 5x / 3x / 1.15x the
idiomatic PyTorch loop on the small / medium / large net; the large net at
80% of the GEMM peak in the default mode.

Both BLAS libraries are measured and printed first: PyTorch's wheel calls
MKL, which on AMD CPUs does not take its fast code path, so on the GEMM-bound
largest net part of the ratio is the BLAS, not the trainer.

Usage::

    python benchmarks/trainer_speed.py [--quick] [--repeats N]

The thread limits are set here, before numpy loads. ``OPENBLAS_CORETYPE`` /
``OPENBLAS_L2_SIZE`` (set on some machines for old OpenBLAS builds; they slow
a current one) are removed from this process only, and the kernel OpenBLAS
then picked is printed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
_UNSET = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(v, None)]

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.trainer import dataset_from_arrays, fit  # noqa: E402

SIZES = [
    # (layer sizes, batch size, training samples, target ratio to PyTorch eager)
    ([2, 64, 64, 2], 32, 8192, 5.0),
    ([64, 128, 128, 10], 64, 16384, 3.0),
    ([784, 256, 256, 10], 128, 16384, 1.15),
]
DEFAULT_COST_TARGET = 0.05  # the default mode's extra time over the running mode
GEMM_SHARE_TARGET = 0.80  # of the single-thread GEMM peak, largest net, default mode
N_VAL_SHARE = 0.2


def synthetic(sizes: list[int], n: int, seed: int = 0):
    """Gaussian inputs labelled by a random linear teacher."""
    rng = np.random.default_rng(seed)
    n_val = int(n * N_VAL_SHARE)
    X = rng.standard_normal((n + n_val, sizes[0])).astype(np.float32)
    y = np.argmax(X @ rng.standard_normal((sizes[0], sizes[-1])), axis=1)
    return X[:n], y[:n], X[n:], y[n:]


def sweeplab_rate(sizes, batch, arrays, epochs, train_metrics) -> tuple[float, float]:
    X, y, Xv, yv = arrays
    data = dataset_from_arrays(X, y, Xv, yv, task="classification")
    spec = {
        "dataset": {"name": "digits"},  # replaced by data=; the head follows the data
        "architecture": {
            "layers": [{"units": u, "activation": "relu"} for u in sizes[1:-1]],
            "output_activation": "softmax",
        },
        "hyperparameters": {
            "learning_rate": 0.01,
            "optimizer": "sgd",
            "batch_size": batch,
            "epochs": epochs,
            "dtype": "float32",
            "train_metrics": train_metrics,
        },
    }
    fit({**spec, "hyperparameters": {**spec["hyperparameters"], "epochs": 1}}, data=data)  # warm
    t0 = time.process_time()
    result = fit(spec, data=data)
    seconds = time.process_time() - t0
    return len(X) * epochs / seconds, result.history[-1]["val_accuracy"]


def _timed(run, n: int, epochs: int) -> tuple[float, float]:
    """``run(1)`` to warm up, then (samples per CPU second, accuracy) of ``run(epochs)``."""
    run(1)
    t0 = time.process_time()
    acc = run(epochs)
    return n * epochs / (time.process_time() - t0), acc


def torch_rate(sizes, batch, arrays, epochs) -> tuple[float, float]:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    X, y, Xv, yv = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    layers: list = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    n = len(X)

    def run(n_epochs):
        acc = 0.0
        for _ in range(n_epochs):
            model.train()
            perm = torch.randperm(n)
            total = torch.zeros(())
            for s in range(0, n, batch):
                idx = perm[s : s + batch]
                loss = criterion(model(X[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
            model.eval()
            with torch.no_grad():
                out = model(Xv)
                _val_loss = criterion(out, yv).item()
                acc = (out.argmax(1) == yv).float().mean().item()
            _train_loss = total.item()
        return acc

    return _timed(run, n, epochs)


def torch_tuned_rate(sizes, batch, arrays, epochs) -> tuple[float, float]:
    """The strongest eager PyTorch loop we know (not the target's reference): the
    same model through ``torch.addmm`` and in-place ReLU, the training set
    shuffled once per epoch when sweeplab's ``fit`` does the same (under its
    ``GATHER_PER_EPOCH_BYTES``), ``inference_mode`` for validation."""
    import torch
    import torch.nn.functional as F

    from services.trainer.train import GATHER_PER_EPOCH_BYTES

    torch.set_num_threads(1)
    torch.manual_seed(0)
    X, y, Xv, yv = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    linears = [torch.nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]
    params = [(lin.weight, lin.bias) for lin in linears]
    opt = torch.optim.SGD([t for pair in params for t in pair], lr=0.01)
    n, last = len(X), len(params) - 1
    per_epoch_gather = X.numel() * 4 <= GATHER_PER_EPOCH_BYTES

    def forward(x):
        for i, (W, b) in enumerate(params):
            x = torch.addmm(b, x, W.t())
            if i < last:
                x = x.relu_()
        return x

    def run(n_epochs):
        acc = 0.0
        for _ in range(n_epochs):
            perm = torch.randperm(n)
            if per_epoch_gather:
                Xe, ye = X.index_select(0, perm), y.index_select(0, perm)
            total = torch.zeros(())
            for s in range(0, n, batch):
                if per_epoch_gather:
                    xb, yb = Xe[s : s + batch], ye[s : s + batch]
                else:
                    idx = perm[s : s + batch]
                    xb, yb = X[idx], y[idx]
                loss = F.cross_entropy(forward(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
            with torch.inference_mode():
                out = forward(Xv)
                _val_loss = F.cross_entropy(out, yv).item()
                acc = (out.argmax(1) == yv).float().mean().item()
            _train_loss = total.item()
        return acc

    return _timed(run, n, epochs)


def gemm_peak_gflops(repeats: int = 10, use_torch: bool = False) -> float:
    """Best single-thread float32 GEMM rate (1024^3, CPU time), in GFLOP/s: NumPy's
    BLAS, or (``use_torch``) the BLAS PyTorch's ``torch.mm`` calls."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((1024, 1024)).astype(np.float32)
    B = rng.standard_normal((1024, 1024)).astype(np.float32)
    C = np.empty_like(A)
    matmul = np.matmul
    if use_torch:
        import torch

        A, B, C = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(C)
        matmul = torch.mm
    matmul(A, B, out=C)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        matmul(A, B, out=C)
        best = min(best, time.process_time() - t0)
    return 2 * 1024**3 / best / 1e9


def torch_blas() -> str:
    """The BLAS PyTorch was built with (from ``torch.__config__.show()``)."""
    import torch

    config = torch.__config__.show()
    for line in config.splitlines():
        if "BLAS_INFO=" in line:
            return line.split("BLAS_INFO=")[1].split(",")[0]
    return "MKL" if "USE_MKL=ON" in config else "unknown"


def train_flops_per_sample(sizes: list[int], val_share: float) -> float:
    """Matrix-product FLOPs per training sample: forward, dW, dX (not for layer 0),
    plus the validation forward pass amortized over the training samples."""
    macs = [sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)]
    return 2 * (3 * sum(macs) - macs[0]) + 2 * sum(macs) * val_share


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    blas = [
        i
        for i in threadpool_info()
        if i.get("user_api") == "blas" and "numpy" in i.get("filepath", "")
    ] or [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(
        f"{i.get('internal_api')} {i.get('version')} kernel {i.get('architecture')}"
        f" threads {i.get('num_threads')}"
        for i in blas[:1]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs (rough numbers)")
    parser.add_argument("--repeats", type=int, default=5, help="best of N rounds per entry")
    args = parser.parse_args()
    epochs = 2 if args.quick else 5
    repeats = 2 if args.quick else args.repeats

    print(f"numpy {np.__version__}; BLAS: {blas_info()}")
    print("unset for this process: " + (", ".join(_UNSET) if _UNSET else "nothing (neither set)"))
    try:
        import torch

        torch.set_num_threads(1)
        numpy_gemm, torch_gemm = gemm_peak_gflops(), gemm_peak_gflops(use_torch=True)
        print(f"torch {torch.__version__}, 1 intra-op thread; BLAS: {torch_blas()}")
        print(
            f"single-thread float32 GEMM (1024^3): NumPy {numpy_gemm:.0f} GFLOP/s, "
            f"torch.mm {torch_gemm:.0f} GFLOP/s"
            + (
                " (PyTorch's BLAS is slower here: on large layers part of the ratio is BLAS,"
                " not the trainer)"
                if torch_gemm < 0.8 * numpy_gemm
                else ""
            )
        )
    except ImportError:
        print("torch is not installed: PyTorch columns skipped")
        torch = None

    print(
        "default/s: train_metrics 'after_epoch' (accuracy on a 1,024-row sample after the"
        " epoch); running/s: 'running'; cost: default's extra time over running"
    )
    print(
        "torch/s: the idiomatic eager loop (nn.Sequential, per-batch indexing; the targets);"
        " tuned/s: addmm + relu_, per-epoch shuffle as fit does, inference_mode"
    )
    header = (
        f"{'network':<16}{'batch':>6}{'default/s':>11}{'running/s':>11}{'cost':>7}"
        f"{'torch/s':>10}{'default':>9}{'running':>9}{'target':>8}"
        f"{'tuned/s':>10}{'vs tuned':>9}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    shares = []
    for sizes, batch, n, target in SIZES:
        arrays = synthetic(sizes, n)
        running = default = theirs = tuned = peak = 0.0
        for _ in range(repeats):  # interleaved rounds
            running = max(running, sweeplab_rate(sizes, batch, arrays, epochs, "running")[0])
            default = max(default, sweeplab_rate(sizes, batch, arrays, epochs, "after_epoch")[0])
            peak = max(peak, gemm_peak_gflops(repeats=3))
            if torch:
                theirs = max(theirs, torch_rate(sizes, batch, arrays, epochs)[0])
                tuned = max(tuned, torch_tuned_rate(sizes, batch, arrays, epochs)[0])
            else:
                theirs = tuned = float("nan")
        cost = running / default - 1
        ratio, ratio_running = default / theirs, running / theirs
        ok = ok and cost <= DEFAULT_COST_TARGET and (ratio >= target if torch else True)
        name = "-".join(map(str, sizes))
        print(
            f"{name:<16}{batch:>6}{default:>11,.0f}{running:>11,.0f}{cost:>+7.1%}"
            f"{theirs:>10,.0f}{ratio:>8.2f}x{ratio_running:>8.2f}x{target:>7.2f}x"
            f"{tuned:>10,.0f}{default / tuned:>8.2f}x"
        )
        flops = train_flops_per_sample(sizes, N_VAL_SHARE)
        shares.append((name, peak, default * flops / 1e9, running * flops / 1e9))

    print(
        "single-thread float32 GEMM peak (1024^3, best of the rounds) and the share of it"
        " reached (training and validation matrix products):"
    )
    for name, peak, got_default, got_running in shares:
        print(
            f"  {name:<16} peak {peak:6.1f} GFLOP/s; default {got_default:6.1f} GFLOP/s ="
            f" {got_default / peak:4.0%}, running {got_running:6.1f} GFLOP/s ="
            f" {got_running / peak:4.0%}"
        )
    name, peak, got_default, _ = shares[-1]
    ok = ok and got_default / peak >= GEMM_SHARE_TARGET
    print(
        f"targets: default within {DEFAULT_COST_TARGET:.0%} of running; default "
        + " / ".join(f"{t:g}x" for *_, t in SIZES)
        + " PyTorch eager; "
        f"{name} default >= {GEMM_SHARE_TARGET:.0%} of GEMM peak"
    )
    print("all targets met" if ok else "some targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
