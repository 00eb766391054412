"""What a job will cost, from its spec alone: peak memory and floating-point operations.

``estimate(spec)`` reads a normalized job spec (the trainer's ``parse_spec(...).to_dict()``)
and models what ``services.trainer.fit`` allocates, without building the data or the
network. ``d`` is the bytes of the spec's dtype (float32: 4, float64: 8); ``n`` rows
(``n_tr`` training, ``n_val`` validation), ``f`` features, ``k`` outputs, ``P`` weights
and biases, ``m`` rows per batch (``bs`` and the short last batch)::

    dataset     8 (n f + n) x 4 while it is made (X, its split, the standardized copy
                and its temporary); afterwards 8 (n f + n) stay
    sets        d n (f + 1 + k)                [X, 1] and the encoded targets
    gathered    d n_tr (f + 1 + 2 k)           the per-epoch shuffled copy, when the
                                               training set fits GATHER_PER_EPOCH_BYTES,
                                               else the per-batch buffers d m (f + 1 + 2 k)
    batch       per batch size m: d m (f + 2 + 2 k) + per layer of width u (input u_in):
                d m u (1 + [relu: zeros] + [sigmoid/tanh: A] + [dropout: 3])
                + 2 d m u_max (sigmoid/tanh: the derivative's temporaries)
                + m u (ReLU mask) + d m u_in (dX, but the first layer)
                + 3 d m k (the loss's temporaries)
    evaluation  per chunk size c (the 1,024-row training sample, validation chunks of
                at most EVAL_CHUNK rows): d c (sum u + 4 k), and the sample's copy
    parameters  d P (2 + optimizer buffers (SGD momentum 1, RMSprop 1-2, Adam 2) + 2
                scratch + [restore_best] 1) + d W [l2]; a checkpoint serializes
                8 P (1 + buffers) twice
    records     256 KiB + (1 KiB + 64 B per layer) per epoch (the run's epoch records)

The peak is ``max(dataset while made, everything else)``. FLOPs for the run::

    epochs x (n_tr (6 W_sum + 10 U) + steps x c_opt P + (n_val + sample) (2 W_sum + 5 U))

with ``W_sum`` the weights (a multiply-add is 2 FLOPs; forward 2, backward 4 per weight
and row), ``U`` the hidden and output units (activation, dropout, bias), ``c_opt`` an
optimizer's operations per parameter and step. tests/unit/services/test_budgets.py
checks the memory model against measured peaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from services.trainer.data import (
    CLASSIFICATION,
    dataset_shape,
    dataset_task,
    validation_rows,
)
from services.trainer.epoch_metrics import TRAIN_SAMPLE_ROWS
from services.trainer.network import EVAL_CHUNK
from services.trainer.train import GATHER_PER_EPOCH_BYTES

GIB = 1 << 30
#: the training speed the hours in a message assume (one BLAS thread: the trainer
#: reaches 60-80 GFLOP/s float32 on the benchmark's mid and large nets, ~half in float64)
FLOPS_PER_SECOND = {"float32": 50e9, "float64": 25e9}
#: the optimizer's operations per parameter and step (scratch, moments, update)
_OPTIMIZER_FLOPS = {"sgd": 4, "rmsprop": 8, "adam": 14, "adamw": 16}

_CHEAP = ("relu", "linear")  # activations computed in place, without a second array

#: the spec field that shrinks each part of the memory estimate
PART_LOC = {
    "dataset": "dataset.n_samples",
    "sets": "dataset.n_samples",
    "gathered": "dataset.n_samples",
    "batch": "hyperparameters.batch_size",
    "evaluation": "dataset.n_samples",
    "parameters": "architecture.layers",
    "records": "hyperparameters.epochs",
}


@dataclass(frozen=True)
class Estimate:
    """A job's peak memory (bytes) by part, and its floating-point operations."""

    parts: dict[str, int] = field(default_factory=dict)
    loading_bytes: int = 0  # the dataset while it is made (the other parts come after)
    flops: float = 0.0
    dtype: str = "float32"

    @property
    def memory_bytes(self) -> int:
        return max(self.loading_bytes, sum(self.parts.values()))

    @property
    def dominant(self) -> str:
        """The part that weighs most at the peak."""
        if self.loading_bytes >= sum(self.parts.values()):
            return "dataset"
        return max(self.parts, key=lambda name: self.parts[name])

    @property
    def hours(self) -> float:
        return self.flops / FLOPS_PER_SECOND[self.dtype] / 3600


def _outputs(spec: dict[str, Any]) -> int:
    ds = spec["dataset"]
    task, n_classes = dataset_task(ds["name"], ds)
    if task == CLASSIFICATION:
        k = int(n_classes or 2)
        return 1 if k == 2 and spec["architecture"].get("output_activation") == "sigmoid" else k
    if ds["name"] == "uploaded":
        return int(ds.get("n_targets") or 1)
    y = ds.get("y")
    if ds["name"] == "arrays" and y and isinstance(y[0], list):
        return max(len(y[0]), 1)
    return 1


def _pass_bytes(m: int, widths: list[int], layers: list[dict], dropout: float, d: int) -> int:
    """The training pass of ``m`` rows (``backprop.TrainingPass``) and the loss's temporaries."""
    f, k = widths[0], widths[-1]
    total = d * m * (f + 2 + 2 * k) + 3 * d * m * k
    for i, (u_in, u) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        hidden = i < len(layers)
        act = layers[i].get("activation", "relu") if hidden else "linear"
        copies = (
            1 + (act == "relu") + (act not in ("relu", "linear")) + 3 * (dropout > 0 and hidden)
        )
        total += d * m * u * copies + (m * u if act == "relu" else 0)
        total += d * m * u_in if i > 0 else 0
    # sigmoid's and tanh's derivatives (1 - A * A) make two temporaries of the widest layer
    smooth = [
        u
        for u, layer in zip(widths[1:], layers, strict=False)
        if layer.get("activation") not in _CHEAP
    ]
    return total + 2 * d * m * max(smooth, default=0)


def estimate(spec: dict[str, Any]) -> Estimate:
    """Estimate peak memory and FLOPs of a job of normalized ``spec`` (see the module)."""
    ds, arch, hp = spec["dataset"], spec["architecture"], spec["hyperparameters"]
    dtype = hp.get("dtype", "float32")
    d = 8 if dtype == "float64" else 4
    n, f = dataset_shape(ds["name"], ds)
    n_val = validation_rows(ds["name"], ds, ds.get("validation_split", 0.2))
    if n_val is None:
        n_val = round(n * ds.get("validation_split", 0.2))
    n_tr = max(n - n_val, 1)
    k = _outputs(spec)
    layers = arch["layers"]
    widths = [f, *(int(layer["units"]) for layer in layers), k]
    n_weights = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    n_params = n_weights + sum(widths[1:])
    units = sum(widths[1:])
    dropout = float(hp.get("dropout") or 0.0)

    bs = min(int(hp.get("batch_size") or n_tr), n_tr)
    sizes = {bs} | ({n_tr % bs} if n_tr % bs else set())
    per_epoch = d * n_tr * (f + 1 + k) <= GATHER_PER_EPOCH_BYTES
    if per_epoch:
        gathered = d * n_tr * (f + 1 + 2 * k)
    else:
        gathered = sum(d * m * (f + 1 + 3 * k) for m in sizes)
    sample = min(TRAIN_SAMPLE_ROWS, n_tr)
    chunks = {sample} | {c for c in (min(n_val, EVAL_CHUNK), n_val % EVAL_CHUNK) if c}
    evaluation = sum(d * c * (units + 4 * k) for c in chunks)
    evaluation += d * sample * (f + 1 + k) if n_tr > TRAIN_SAMPLE_ROWS else 0

    optimizer = hp.get("optimizer", "sgd")
    buffers = {"adam": 2, "adamw": 2, "rmsprop": 1 + bool(hp.get("momentum"))}.get(
        optimizer, int(bool(hp.get("momentum")))
    )
    es = hp.get("early_stopping") or {}
    copies = 2 + buffers + 2 + bool(es and es.get("restore_best", True))
    parameters = d * n_params * copies + (d * n_weights if hp.get("l2") else 0)
    parameters += 2 * 8 * n_params * (1 + buffers)  # a checkpoint's arrays and its bytes

    kept = 8 * (n * f + n)
    epochs = int(hp.get("epochs", 20))
    parts = {
        "records": (256 << 10) + epochs * (1024 + 64 * len(widths)),
        "dataset": kept,
        "sets": d * n * (f + 1 + k),
        "gathered": gathered,
        "batch": sum(_pass_bytes(m, widths, layers, dropout, d) for m in sizes),
        "evaluation": evaluation,
        "parameters": parameters,
    }
    steps = math.ceil(n_tr / bs)
    per_epoch_flops = (
        n_tr * (6 * n_weights + 10 * units)
        + steps * _OPTIMIZER_FLOPS.get(optimizer, 16) * n_params
        + (n_val + sample) * (2 * n_weights + 5 * units)
    )
    return Estimate(parts, 4 * kept, float(epochs * per_epoch_flops), dtype)


def human_bytes(value: float) -> str:
    return f"{value / GIB:,.2f} GiB" if value >= GIB / 100 else f"{value / (1 << 20):,.1f} MiB"


def human_flops(value: float) -> str:
    tera = value / 1e12
    return f"{tera:,.0f} TFLOP" if tera >= 100 else f"{tera:.3g} TFLOP"


def problems(est: Estimate, max_memory_bytes: int, max_flops: float) -> list[dict[str, str]]:
    """The 422 details of an estimate over the limits (empty when it fits)."""
    details = []
    if max_memory_bytes and est.memory_bytes > max_memory_bytes:
        part = est.dominant
        size = est.loading_bytes if part == "dataset" else est.parts[part]
        details.append(
            {
                "loc": PART_LOC[part],
                "msg": f"the job needs about {human_bytes(est.memory_bytes)} of memory "
                f"(most of it the {part}: {human_bytes(size)}), over the limit of "
                f"{human_bytes(max_memory_bytes)} (SWEEPLAB_MAX_JOB_MEMORY_BYTES)",
            }
        )
    if max_flops and est.flops > max_flops:
        rate = FLOPS_PER_SECOND[est.dtype]
        details.append(
            {
                "loc": "hyperparameters.epochs",
                "msg": f"the job needs about {human_flops(est.flops)} "
                f"(~{est.hours:,.1f} hours at {rate / 1e9:.0f} GFLOP/s), over the limit of "
                f"{human_flops(max_flops)} (~{max_flops / rate / 3600:,.1f} hours; "
                f"SWEEPLAB_MAX_JOB_FLOPS)",
            }
        )
    return details
