"""The training loop: mini-batch gradient descent, early stopping, divergence, checkpoints.

``fit(spec)`` trains epoch by epoch, as the textbook loop does: shuffle the
training set, then for each mini-batch a forward pass, the loss and its
gradient, backpropagation and an optimizer step; after the epoch, measure.
The speed tricks that make that loop cheap (one gather per epoch,
preallocated buffers, the learning rate folded into the loss gradient,
cross-entropy's logarithms once per epoch) live in ``epoch.py``, each under
its name; what is measured after the epoch lives in ``epoch_metrics.py``; the
records and the result in ``records.py``.

A record per epoch (see ``docs/CONTRACTS.md``)::

    epoch             1-based
    train_loss        mean of the epoch's mini-batch data losses, each taken
                      before its update
    val_loss          after the epoch's updates (None without a validation set)
    train_accuracy    classification only. Default ("after_epoch"): after the
                      epoch's updates, on a fixed sample of 1,024 training
                      rows drawn once from the spec's seed (the whole set when
                      it is no larger; ``TrainResult.train_metrics`` records
                      the sample's size and seed). ``train_metrics="running"``:
                      over the epoch's mini-batches, each before its update
                      (as Keras and Lightning report it)
    val_accuracy      classification only, after the epoch, on every validation row
    learning_rate     the epoch's rate
    grad_norm         per layer the mean of ||dL/dW|| (data loss + L2, before
                      clipping) over 8 evenly spaced full-size mini-batches of
                      the epoch (all of them when there are fewer; see
                      epoch.norm_steps), each on its own batch's gradient
    weight_norm       per layer ||W|| after the epoch's updates
    dead_relu_fraction per layer share of ReLU units that fired on no row of
                      the training sample after the epoch (on the validation
                      rows with "running"); None for other layers
    seconds           wall time of the epoch

A non-finite mini-batch loss ends training in that batch's epoch (status
``"diverged"``), without the rest of the epoch's updates or its evaluation;
that epoch's record holds None for what was not measured. Weights are checked
once per epoch (a non-finite weight makes the next batch's loss non-finite).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from .build import (
    as_dataset,
    as_indices_of,
    build_network,
    generators,
    load_dataset,
    with_ones_column,
)
from .checkpoint import Checkpoint, dump_checkpoint, load_checkpoint, spec_digest
from .data import CLASSIFICATION, Dataset
from .diagnostics import diagnose
from .epoch import Batches, GradientNorms, LearningRateFolding, batch_losses
from .epoch_metrics import EpochMetrics
from .network import Network
from .optimizers import clip_by_global_norm, get_optimizer
from .records import (
    BestTracker,
    TrainResult,
    epoch_record,
    flatten_record,
    previous_records,
    unflatten_record,
)
from .schedules import learning_rate
from .spec import SpecError, parse_spec
from .subnormals import flushing

__all__ = ["TrainResult", "fit", "flatten_record", "unflatten_record"]

GATHER_PER_EPOCH_BYTES = 8 << 20  # see epoch.Batches
COMPLETED, EARLY_STOPPED, DIVERGED, STOPPED = "completed", "early_stopped", "diverged", "stopped"


@flushing
def fit(
    spec,
    *,
    data: Dataset | dict | None = None,
    network: Network | None = None,
    on_epoch: Callable[[dict], bool | None] | None = None,
    resume_from: bytes | None = None,
    history: list[dict] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[int, bytes], None] | None = None,
    checkpoint_due: Callable[[int], bool] | None = None,
    interrupt: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a network as ``spec`` describes.

    Parameters
    ----------
    spec : dict or Spec
        The job spec (validated by ``parse_spec``; a bad one raises ``SpecError``).
    data : Dataset or dict, optional
        Data to use instead of ``spec["dataset"]``.
    network : Network, optional
        Start from this network (it is trained in place) instead of a fresh one.
    on_epoch : callable, optional
        ``on_epoch(record)`` after each epoch; a truthy return stops training
        (status ``"stopped"``).
    resume_from : bytes, optional
        A checkpoint from ``on_checkpoint``; training continues after its epoch
        and reproduces the uninterrupted run bit for bit, records, best epoch
        and diagnosis included.
    history : list of dict, optional
        With ``resume_from`` (taken after epoch ``k``): the records of epochs
        ``1..k``, in order, as ``on_epoch`` received them or in their
        ``flatten_record`` form (what a caller that stores flat metrics has).
        Checkpoints do not carry the history, so that their size does not grow
        with the run; required unless the checkpoint is an old one that does.
        Ignored without ``resume_from``.
    checkpoint_every : int
        If > 0, call ``on_checkpoint(epoch, blob)`` every that many epochs.
    checkpoint_due : callable, optional
        ``checkpoint_due(epoch)`` after each epoch's ``on_epoch``: a truthy
        return asks for a checkpoint of that epoch as well (say, by time), even
        when ``on_epoch`` stopped the run.
    interrupt : callable, optional
        ``interrupt()`` before each mini-batch; a truthy return ends training
        at once (status ``"stopped"``) without recording the unfinished epoch:
        its updates are in ``network`` but in no record, and a resume from the
        last checkpoint replays it (a warm shutdown, a lost lease).

    Returns
    -------
    TrainResult
        ``status`` is ``"completed"``, ``"early_stopped"``, ``"diverged"`` or
        ``"stopped"``; divergence is never an exception.
    """
    run = _Run(spec, data, network)
    if resume_from is not None:
        run.resume(resume_from, history)
    hp, net, rng, optimizer = run.hp, run.net, run.rng, run.optimizer
    batches = Batches(net, run.X_train, run.Y_train, hp.batch_size, GATHER_PER_EPOCH_BYTES)
    losses = batch_losses(net.loss, batches.bounds, net.dtype)
    metrics = run.epoch_metrics(batches.bounds)
    folding = LearningRateFolding(
        optimizer, hp.l2, hp.gradient_clip_norm, len(batches), batches.norm_steps
    )
    norms = GradientNorms(net)
    measure_norms = [i in batches.norm_steps for i in range(len(batches))]
    params, grads, W, gW = net.params_flat, net.grads_flat, *run.weights
    l2, clip, running = hp.l2, hp.gradient_clip_norm, metrics.running

    status = COMPLETED
    for epoch in range(run.start_epoch + 1, hp.epochs + 1):
        t0 = time.perf_counter()
        lr = learning_rate(hp.learning_rate, epoch - 1, hp.lr_schedule, hp.epochs)
        perm = rng.permutation(batches.n)
        batches.shuffle(perm)
        metrics.shuffle(perm)
        scales = folding.scales(lr)  # per batch: the loss's scale, whether grads are lr * g
        norms.start()
        diverged = interrupted = False
        with np.errstate(all="ignore"):
            for i, (Xb, Yb, step) in enumerate(batches):
                if interrupt is not None and interrupt():  # a batch boundary: stop here
                    interrupted = True
                    break
                scale, prescaled = scales[i]
                O = step.forward(Xb, rng)  # forward: the outputs (logits for a fused loss)
                loss = losses.batch(i, O, Yb, step.dO, scale)  # loss, and dL/dO into dO
                if not math.isfinite(loss):  # diverged: stop here, not after an epoch of NaNs
                    diverged = True
                    break
                if running is not None:
                    running.observe(i, O)
                step.backward(step.dO)  # backward: every layer's gradients into grads
                if l2:  # the L2 term's gradient, l2 * W, on the weights only
                    gW += np.multiply(W, l2, out=run.l2_tmp)
                if measure_norms[i]:
                    norms.add()
                if clip is not None:
                    clip_by_global_norm(grads, clip)
                optimizer.step(params, grads, lr, prescaled)  # step: update the parameters

            if interrupted:  # the unfinished epoch leaves no record
                status = STOPPED
                break
            train_loss, measured = None, None  # nothing is measured after a diverged batch
            if not diverged:  # after the epoch's updates
                train_loss = losses.epoch_mean()
                measured = metrics.measure()  # train accuracy, val loss and accuracy, live units
                val_loss = measured[1]
                diverged = not (
                    math.isfinite(train_loss)
                    and bool(np.isfinite(params).all())
                    and (val_loss is None or math.isfinite(val_loss))
                )

        record = run.record(
            epoch, lr, norms.means(), train_loss, measured, time.perf_counter() - t0
        )
        status = run.end_epoch(record, diverged, on_epoch)
        if on_checkpoint is not None and run.checkpoint_due(
            epoch, status, checkpoint_every, checkpoint_due
        ):
            on_checkpoint(epoch, run.checkpoint(epoch))
        if status != COMPLETED:
            break
    return run.result(status, metrics.info)


class _Run:
    """One call of ``fit``: its spec, data, network, optimizer, random generator,
    best-epoch tracker and records, and what happens between epochs."""

    def __init__(self, spec, data: Dataset | dict | None, network: Network | None):
        self.started = time.perf_counter()
        self.spec = spec = parse_spec(spec)
        self.hp = hp = spec.hyperparameters
        data = as_dataset(data) if data is not None else load_dataset(spec.dataset)
        if len(data.X_train) == 0:
            raise ValueError("the training set is empty")
        es_metric = hp.early_stopping.metric if hp.early_stopping is not None else ""
        if es_metric.startswith("val_") and len(data.X_val) == 0:
            raise SpecError(
                "hyperparameters.early_stopping.metric",
                f"{es_metric!r} needs a validation set, and this data has no validation rows",
            )
        init_rng, self.rng = generators(hp.seed)
        net = network if network is not None else build_network(spec, data, init_rng)
        if data.n_features != net.layers[0].n_in:
            raise ValueError(
                f"the data has {data.n_features} features but the network "
                f"takes {net.layers[0].n_in}"
            )
        self.classification = classification = data.task == CLASSIFICATION
        n_out = net.layers[-1].n_out
        if network is not None and classification and data.classes:
            data = as_indices_of(data, max(n_out, 2))
        if classification and data.n_classes is not None and data.n_classes > max(n_out, 2):
            raise ValueError(
                f"the data has {data.n_classes} classes but the network {n_out} outputs"
            )
        self.net, self.data = net, data
        # Inputs with a column of ones appended: the first layer's bias rides in
        # its matrix product (see backprop.TrainingPass).
        self.X_train = with_ones_column(data.X_train, net)
        self.Y_train = net.encode_targets(data.y_train)
        self.optimizer = get_optimizer(hp.optimizer, net.n_weights, **hp.optimizer_options())
        es = hp.early_stopping
        if es is not None:
            self.tracker = BestTracker(es.metric, es.mode, es.min_delta, es.patience)
        else:
            self.tracker = BestTracker("val_loss" if len(data.X_val) else "train_loss", "min")
        self.restore_best = es is not None and es.restore_best
        self.best_params = net.params_flat.copy() if self.restore_best else None
        self.weights = net.params_flat[: net.n_weights], net.grads_flat[: net.n_weights]
        self.l2_tmp = np.empty_like(self.weights[0]) if hp.l2 else None
        self.records: list[dict] = []
        self.start_epoch, self.seconds_before = 0, 0.0
        self.diverged_epoch: int | None = None
        self._spec_sha256: str | None = None

    def epoch_metrics(self, bounds: list[tuple[int, int]]) -> EpochMetrics:
        data, net = self.data, self.net
        labels = data.y_train.astype(np.int64) if self.classification else None
        labels_val = data.y_val.astype(np.int64) if self.classification else None
        Y_val = np.asfortranarray(net.encode_targets(data.y_val))  # F-ordered like the outputs
        return EpochMetrics(
            net,
            self.hp.train_metrics,
            self.X_train,
            self.Y_train,
            labels,
            with_ones_column(data.X_val, net),
            Y_val,
            labels_val,
            bounds,
            self.hp.seed,
        )

    def resume(self, blob: bytes, history: list[dict] | None) -> None:
        """Continue after the checkpoint ``blob`` (taken after epoch ``k``); ``history``
        holds the records of epochs ``1..k``."""
        net, ckpt = self.net, load_checkpoint(blob)
        if ckpt.meta["architecture"]["sizes"] != net.sizes or ckpt.params.size != net.n_params:
            raise ValueError("checkpoint does not match the network this spec builds")
        digest = ckpt.meta.get("spec_sha256")  # version 3 on; older ones were not checked
        if digest is not None and digest != self.spec_sha256():
            raise ValueError("checkpoint was taken by another spec (its spec_sha256 differs)")
        self.records = previous_records(history, ckpt, len(net.layers), self.classification)
        net.set_canonical(ckpt.params)
        self.optimizer.load_state_dict(
            ckpt.meta["optimizer"],
            {k: net.set_canonical(v, np.empty_like(v)) for k, v in ckpt.optimizer_arrays.items()},
        )
        self.rng.bit_generator.state = ckpt.meta["rng"]
        self.tracker.load(ckpt.meta["tracker"])
        if ckpt.best_params is not None and self.restore_best:
            self.best_params = net.set_canonical(ckpt.best_params, np.empty_like(ckpt.best_params))
        self.start_epoch = ckpt.epoch
        self.seconds_before = float(ckpt.meta.get("seconds", 0.0))

    def end_epoch(self, record: dict, diverged: bool, on_epoch) -> str:
        """Keep ``record``, track the best epoch, call ``on_epoch``; the run's status
        (``COMPLETED``: go on)."""
        self.records.append(record)
        if diverged:
            self.diverged_epoch = record["epoch"]
            if on_epoch is not None:
                on_epoch(record)
            return DIVERGED
        tracker = self.tracker
        improved = tracker.update(record["epoch"], record.get(tracker.metric))
        if improved and self.best_params is not None:
            np.copyto(self.best_params, self.net.params_flat)
        if on_epoch is not None and on_epoch(record):
            return STOPPED
        return EARLY_STOPPED if tracker.should_stop else COMPLETED

    def record(self, epoch, lr, grad_norms, train_loss, measured, seconds: float) -> dict:
        """The epoch's record; ``measured`` is ``EpochMetrics.measure()``'s tuple (None
        when the epoch diverged in a batch)."""
        train_acc, val_loss, val_acc, active = measured or (None, None, None, None)
        active = active or [None] * len(self.net.layers)
        return epoch_record(
            epoch,
            self.classification,
            (train_loss, val_loss),
            (train_acc, val_acc),
            lr,
            grad_norms,
            self.net,
            active,
            seconds,
        )

    def checkpoint_due(
        self, epoch: int, status: str, every: int, due: Callable[[int], bool] | None
    ) -> bool:
        """Whether to checkpoint after ``epoch``: every ``every`` epochs of a run that goes
        on, or when ``due(epoch)`` asks (a stopped run too); never after the last epoch
        (the run is done), nor after a diverged or early-stopped one."""
        if epoch >= self.hp.epochs or status not in (COMPLETED, STOPPED):
            return False
        if status == COMPLETED and every > 0 and epoch % every == 0:
            return True
        return due is not None and bool(due(epoch))

    def spec_sha256(self) -> str:
        """The spec's digest (see ``checkpoint.spec_digest``), computed once per run:
        with inline data the spec is as large as the data."""
        if self._spec_sha256 is None:
            self._spec_sha256 = spec_digest(self.spec.to_dict())
        return self._spec_sha256

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def checkpoint(self, epoch: int) -> bytes:
        """The state after ``epoch``, from which ``resume`` continues bit for bit."""
        net, best = self.net, self.best_params
        scalars, arrays = self.optimizer.state_dict()
        meta = {
            "epoch": epoch,
            "spec_sha256": self.spec_sha256(),
            "architecture": net.architecture(),
            "optimizer": scalars,
            "rng": self.rng.bit_generator.state,
            "tracker": self.tracker.state(),
            "seconds": self.elapsed(),
        }
        arrays = {key: net.canonical(value) for key, value in arrays.items()}
        best_canonical = net.canonical(best) if best is not None else None
        return dump_checkpoint(
            Checkpoint(meta, net.canonical(net.params_flat), arrays, best_canonical)
        )

    def result(self, status: str, train_metrics: dict) -> TrainResult:
        """The ``TrainResult``: however the run ended (a diverged one too: its last
        weights are not finite), ``restore_best`` hands back the best epoch's weights."""
        tracker, records, data = self.tracker, self.records, self.data
        if self.restore_best and tracker.best_epoch is not None:
            np.copyto(self.net.params_flat, self.best_params)  # type: ignore[arg-type]
        best_metrics = None
        if tracker.best_epoch is not None:
            best_metrics = flatten_record(records[tracker.best_epoch - 1])
            best_metrics.pop("seconds", None)
        seconds = self.elapsed()
        baseline = reference = None
        if not self.classification:
            baseline = float(np.mean(np.var(self.Y_train, axis=0)))
        elif self.net.loss.name == "cross_entropy":  # an uninformed guess: ln K
            reference = math.log(max(self.net.layers[-1].n_out, 2))
        else:
            reference = math.log(2)
        diagnosis = diagnose(
            records,
            status=status,
            task=data.task,
            diverged_epoch=self.diverged_epoch,
            baseline_loss=baseline,
            reference_loss=reference,
        )
        return TrainResult(
            status,
            records,
            tracker.best_epoch,
            best_metrics,
            self.diverged_epoch,
            seconds,
            diagnosis,
            self.net,
            self.spec,
            data.summary(),
            data,
            train_metrics,
        )
