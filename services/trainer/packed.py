"""Trial packing: train k networks of one architecture on one dataset together.

A learning-rate sweep trains the same network on the same data many times
with different scalar hyperparameters. For small networks ``fit`` is bound
by the ~35 NumPy calls of a step, not by arithmetic; ``fit_packed`` stacks
the trials' weights along a leading axis, ``(k, fan_in, fan_out)``, so that
each call does the work of all of them (``packed_pass``, ``packed_optim``,
``packed_stack``). ``packing_pays`` (``packed_rule``) says when that is faster
than k solo runs.

What may differ within a pack (``PACKED_FIELDS``): the learning rate and its
schedule, momentum, Nesterov, dampening, RMSprop's alpha, eps, Adam's betas,
AdamW's weight decay, l2, gradient clipping, the dropout rate, early stopping
and the seed (each trial draws its initial weights, its batch orders and its
dropout masks from its own generators, exactly as ``fit`` does). Everything
else (dataset, architecture, optimizer, batch size, epochs, loss, dtype,
``train_metrics``) is ``pack_key``; specs with different keys are a
``PackError``.

Same numbers as solo ``fit``, bit for bit
-----------------------------------------
Each packed trial's records (everything but ``seconds``), status, best epoch,
diagnosis, final weights and checkpoints equal its solo run's bit for bit (on
one machine; ``tests/unit/trainer/test_packed.py``), in float32 and float64,
because the same kernels run on the same operands:

- every product is ``np.matmul`` over stacked operands whose slices are laid
  out like the solo ``np.dot``'s 2-D operands (C-ordered or the transpose of
  a C-ordered block), so NumPy makes the same BLAS call per slice (``gemm``
  with the same transpose flags, ``gemv`` for the bias gradients, ``dot`` for
  the losses' and the clipping's sums): checked slice by slice in the tests;
- element-wise calls take per-trial scalars as arrays of the network's dtype,
  the value NumPy rounds a Python float to in the solo call;
- reductions run per trial over the same axis and memory order as solo (the
  softmax's row max and row sums over the class axis; a trial's mean over its
  own batch losses), never across the stacked axis;
- everything measured after an epoch (accuracies, validation loss, norms,
  live units, divergence) runs the solo code on each trial's ``Network``,
  rebound onto its row of the stack; checkpoints are ``_Run.checkpoint``'s.

So there is no place where a packed trial's numbers may differ from its solo
run's, and the tests assert bit-for-bit equality (not just the 1e-12 / 1e-5
relative agreement allowed where kernels differ). Should a BLAS build ever
pick another kernel for a stacked call than for the 2-D one, the slice-by-slice
test of the products fails first and names it. A record's ``seconds`` is the
pack's wall time from the epoch's start to the trial's record (its
measurements after the epoch included, as solo). Not packable: a
softmax output without cross-entropy (its reductions are written for 2-D).

Trials that stop
----------------
A trial whose batch loss is not finite stops at that batch (``packed_stack``:
frozen, its state kept from before the update); after the epoch it is
recorded like a solo run (status ``"diverged"``). A trial that stops early,
is stopped by its ``on_epoch`` (pruned, cancelled), diverges or completes
leaves the pack at that epoch. ``leave="drop"`` (the default) then compacts
the stack to the remaining trials; ``leave="mask"`` keeps its row computing
at rate 0. Dropping was measured faster (``benchmarks/packing_speed.py
--leave``): see ``packed_rule``'s docstring for the numbers.

Checkpoints and resume
----------------------
``on_checkpoint[i](epoch, blob)`` gets trial ``i``'s checkpoint in ``fit``'s
own format (``checkpoint.py``): ``fit(spec_i, resume_from=blob, history=...)``
resumes the trial alone, and ``fit_packed(specs, resume_from=[...],
history=[...])`` resumes a pack from its trials' checkpoints, all taken after
the same epoch (a ``PackError`` otherwise: resume trials at different epochs
in separate packs or alone). Either equals the undisturbed run bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from .build import as_dataset, load_dataset, with_ones_column
from .data import Dataset
from .epoch import norm_steps
from .epoch_metrics import EpochMetrics
from .network import Network
from .packed_rule import pack_size, packing_pays
from .packed_stack import Pack, Shared, Trial
from .records import TrainResult
from .schedules import learning_rate
from .spec import Spec, parse_spec
from .subnormals import flushing
from .train import COMPLETED, STOPPED
from .train import _Run as Run  # fit's own run: the same records, checkpoints and results

__all__ = [
    "PACKED_FIELDS",
    "PackError",
    "check_packable",
    "fit_packed",
    "pack_key",
    "pack_size",
    "packing_pays",
]

#: hyperparameters that may differ between the trials of a pack
PACKED_FIELDS = (
    "learning_rate",
    "lr_schedule",
    "momentum",
    "nesterov",
    "dampening",
    "alpha",
    "eps",
    "betas",
    "weight_decay",
    "l2",
    "gradient_clip_norm",
    "dropout",
    "early_stopping",
    "seed",
)
LEAVE = ("drop", "mask")


class PackError(ValueError):
    """Specs that cannot train in one pack, or checkpoints that cannot resume one."""


def _key_fields(spec: Spec) -> dict:
    body = spec.to_dict()
    body.pop("name", None)
    body["hyperparameters"] = {
        k: v for k, v in body["hyperparameters"].items() if k not in PACKED_FIELDS
    }
    return body


def pack_key(spec) -> str:
    """What trials must share to train in one pack: the SHA-256 of the spec without
    its name and ``PACKED_FIELDS`` (dataset, architecture, optimizer, batch size,
    epochs, loss, dtype, ``train_metrics``). Specs with equal keys can be packed."""
    text = json.dumps(_key_fields(parse_spec(spec)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _differences(a, b, loc: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{loc}.{key}" if loc else key)
        return out
    return [] if a == b else [loc]


def check_packable(specs: Sequence) -> list[Spec]:
    """The parsed specs, or a ``PackError`` naming the fields that keep two apart."""
    parsed = [parse_spec(s) for s in specs]
    if not parsed:
        raise PackError("a pack needs at least one spec")
    keys = [_key_fields(s) for s in parsed]
    for i, key in enumerate(keys[1:], start=1):
        fields = _differences(keys[0], key)
        if fields:
            raise PackError(
                f"specs 0 and {i} cannot share a pack: they differ in {', '.join(fields[:5])}; "
                f"within a pack only hyperparameters.{{{', '.join(PACKED_FIELDS)}}} may differ"
            )
    arch = parsed[0].architecture
    if arch.output_activation == "softmax" and parsed[0].hyperparameters.loss != "cross_entropy":
        raise PackError("a softmax output without cross-entropy has no packed form")
    return parsed


def _shape_of(net: Network) -> str:
    """A network's architecture but its dropout rates (which may differ in a pack)."""
    return json.dumps({k: v for k, v in net.architecture().items() if k != "dropout"})


def _per_trial(values, k: int, name: str) -> list:
    if values is None:
        return [None] * k
    values = list(values)
    if len(values) != k:
        raise PackError(f"{name} needs one entry per spec ({k}), got {len(values)}")
    return values


@flushing
def fit_packed(
    specs: Sequence,
    *,
    data: Dataset | dict | None = None,
    networks: Sequence[Network | None] | None = None,
    on_epoch: Sequence[Callable[[dict], bool | None] | None] | None = None,
    resume_from: Sequence[bytes | None] | None = None,
    history: Sequence[list[dict] | None] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Sequence[Callable[[int, bytes], None] | None] | None = None,
    checkpoint_due: Sequence[Callable[[int], bool] | None] | None = None,
    interrupt: Callable[[], bool] | None = None,
    leave: str = "drop",
    on_leave: Callable[[int, TrainResult], None] | None = None,
) -> list[TrainResult]:
    """Train the trials ``specs`` together; each result equals ``fit(specs[i], ...)``'s.

    Parameters are ``fit``'s, one entry per spec where ``fit`` takes one per run
    (``networks``, ``on_epoch``, ``resume_from``, ``history``, ``on_checkpoint``,
    ``checkpoint_due``: sequences of the same length as ``specs``, entries may be
    None). ``data`` (one dataset for all; default: the specs' own, loaded once),
    ``checkpoint_every`` and ``interrupt`` (asked before each batch of the pack; a
    truthy answer stops every trial, status ``"stopped"``, without recording the
    unfinished epoch; a trial that diverged earlier in that epoch is recorded as
    diverged, as solo) are shared. ``leave``: ``"drop"`` or ``"mask"``, how a
    trial leaves the stack (same numbers; drop is faster). ``on_leave(i, result)``,
    if given, hears each trial's result as it leaves the pack (at the epoch where
    it diverged, stopped early, was stopped by its ``on_epoch``, or at the end),
    before the others train on; what it raises ends the pack with that error.

    Returns
    -------
    list of TrainResult
        In the order of ``specs``.

    Raises
    ------
    PackError
        Specs that differ in more than ``PACKED_FIELDS``; checkpoints of different
        epochs; a per-trial sequence of the wrong length.
    """
    if leave not in LEAVE:
        raise PackError(f"leave must be one of {LEAVE}, got {leave!r}")
    parsed = check_packable(specs)
    k = len(parsed)
    nets = _per_trial(networks, k, "networks")
    data = load_dataset(parsed[0].dataset) if data is None else as_dataset(data)  # once
    runs = [Run(spec, data, net) for spec, net in zip(parsed, nets, strict=True)]
    if len({_shape_of(r.net) for r in runs}) > 1:
        raise PackError("the networks of a pack must have one architecture")
    blobs, histories = _per_trial(resume_from, k, "resume_from"), _per_trial(history, k, "history")
    for run, blob, past in zip(runs, blobs, histories, strict=True):
        if blob is not None:
            run.resume(blob, past)
    starts = sorted({(r.start_epoch, r.optimizer.t) for r in runs})
    if len(starts) > 1:
        raise PackError(
            "a pack resumes trials whose checkpoints were taken after the same epoch; got "
            f"epochs {sorted({s for s, _ in starts})}: resume them alone or in separate packs"
        )
    shared, metrics = _shared(runs)
    callbacks = [
        _per_trial(on_epoch, k, "on_epoch"),
        _per_trial(on_checkpoint, k, "on_checkpoint"),
        _per_trial(checkpoint_due, k, "checkpoint_due"),
    ]
    trials = [
        Trial(i, run, metrics[i], callbacks[0][i], callbacks[1][i], callbacks[2][i])
        for i, run in enumerate(runs)
    ]
    for trial in trials:
        trial.opt_state, trial.t = dict(trial.run.optimizer.state), trial.run.optimizer.t
    order = {path: rank for rank, path in reversed(list(enumerate(t.path for t in trials)))}
    members = sorted(trials, key=lambda t: (order[t.path], t.index))
    _train(
        members,
        shared,
        runs[0].start_epoch,
        parsed[0].hyperparameters.epochs,
        interrupt,
        checkpoint_every,
        leave,
        on_leave,
    )
    return [trial.result for trial in trials]  # type: ignore[misc]


def _shared(runs: list[Run]) -> tuple[Shared, list[EpochMetrics]]:
    """The arrays every trial reads (built once), and each trial's ``EpochMetrics``
    (its own after-epoch sample, drawn from its own seed)."""
    run0 = runs[0]
    data, net = run0.data, run0.net
    n = len(run0.X_train)
    bs = min(run0.hp.batch_size or n, n)
    bounds = [(s, min(s + bs, n)) for s in range(0, n, bs)]
    labels = data.y_train.astype(np.int64) if run0.classification else None
    labels_val = data.y_val.astype(np.int64) if run0.classification else None
    Y_val = np.asfortranarray(net.encode_targets(data.y_val))
    X_val = with_ones_column(data.X_val, net)
    metrics = []
    for run in runs:
        run.X_train, run.Y_train = run0.X_train, run0.Y_train  # one copy for the pack
        metrics.append(
            EpochMetrics(
                run.net,
                run.hp.train_metrics,
                run0.X_train,
                run0.Y_train,
                labels,
                X_val,
                Y_val,
                labels_val,
                bounds,
                run.hp.seed,
            )
        )
    return Shared(run0.X_train, run0.Y_train, bounds, norm_steps(bounds)), metrics


def _train(members, shared, start, epochs, interrupt, every, leave, on_leave) -> None:
    """The epochs of a pack; each trial's ``result`` is set (and ``on_leave`` told)
    when it leaves."""

    def done(trial: Trial, status: str) -> None:
        trial.result = trial.run.result(status, trial.metrics.info)
        if on_leave is not None:
            on_leave(trial.index, trial.result)

    pack = Pack(members, shared) if members else None
    for epoch in range(start + 1, epochs + 1):
        if pack is None:
            break
        t0 = time.perf_counter()
        for trial in pack.trials:
            hp = trial.run.hp
            trial.lr = learning_rate(hp.learning_rate, epoch - 1, hp.lr_schedule, hp.epochs)
        pack.start_epoch()
        interrupted = pack.train_epoch(interrupt)
        leaving = []
        members = pack.trials
        for r in sorted(range(len(members)), key=lambda r: members[r].index):
            trial = pack.trials[r]
            if pack.dead[r]:
                continue
            if interrupted and trial.frozen is None:
                status = STOPPED  # the unfinished epoch leaves no record
            else:
                status = _end_epoch(pack, r, epoch, t0, every)
            if status != COMPLETED or epoch == epochs:
                leaving.append((r, status))
        for r, status in leaving:
            trial = pack.trials[r]
            pack.export(r)
            done(trial, status)
        if interrupted or len(leaving) == len(pack.trials) - int(pack.dead.sum()):
            pack = None
        elif leaving and leave == "drop":
            gone = {r for r, _ in leaving} | set(np.flatnonzero(pack.dead).tolist())
            for r in range(len(pack.trials)):
                if r not in gone:
                    pack.export(r)
            pack = Pack([t for r, t in enumerate(pack.trials) if r not in gone], shared)
        else:
            for r, _ in leaving:
                pack.kill(r)
        if pack is not None:
            pack.live[:] = ~pack.dead
    if pack is not None:  # resumed after the last epoch: nothing left to train
        for r, trial in enumerate(pack.trials):
            pack.export(r)
            done(trial, COMPLETED)


def _end_epoch(pack: Pack, r: int, epoch: int, t0: float, every: int) -> str:
    """Measure, record and report trial ``r``'s epoch as ``fit`` does; its status."""
    trial = pack.trials[r]
    run = trial.run
    if trial.frozen is not None:  # diverged in a batch: nothing measured after it
        pack.thaw(r)
        train_loss, measured, diverged = None, None, True
    else:
        with np.errstate(all="ignore"):  # as fit: a run that blew up measures inf and NaN
            train_loss = pack.losses.epoch_mean(r)
            measured = trial.metrics.measure()
            val_loss = measured[1]
            diverged = not (
                math.isfinite(train_loss)
                and bool(np.isfinite(pack.P[r]).all())
                and (val_loss is None or math.isfinite(val_loss))
            )
    seconds = time.perf_counter() - t0  # the pack's epoch so far, this trial's measures included
    record = run.record(epoch, trial.lr, trial.norms.means(), train_loss, measured, seconds)
    status = run.end_epoch(record, diverged, trial.on_epoch)
    if trial.on_checkpoint is not None and run.checkpoint_due(
        epoch, status, every, trial.checkpoint_due
    ):
        pack.sync(r)
        trial.on_checkpoint(epoch, run.checkpoint(epoch))
    return status
