"""What is measured after a pack's epoch, for every trial in one set of calls.

``EpochMetrics.measure`` with a trial axis: the forward passes over each
trial's training sample and over the shared validation rows run as
``np.matmul`` over the stacked weights (the pack's ``P``), one call per layer
where the solo ``Network.evaluate`` makes one per trial. The numbers are the
solo ones bit for bit:

- each slice of a stacked product is the solo ``np.dot``'s call on the same
  operands (C-ordered rows, the weights' C-ordered block), as in
  ``packed_pass``; the validation rows are broadcast, not copied;
- activations are element-wise (the pack has no softmax layer inside: a
  softmax output is fused with cross-entropy and its logits are what the
  loss reads);
- the validation loss is the solo ``loss.value`` on each trial's own
  F-ordered slice of the outputs, chunk by chunk as ``evaluate`` sums it;
- accuracies are counts of ``argmax`` (or of a threshold), exact integers;
- a ReLU unit fired on some row iff its column's sum of non-negative outputs
  is above 0, which no summation order changes.

The training sample's loss, which ``fit`` computes and throws away, is not
computed. Rows of the stack that are not measured (a trial frozen at a
non-finite loss, a masked trial) compute on and are ignored.
"""

from __future__ import annotations

import numpy as np

from .network import EVAL_CHUNK
from .packed_pass import stacked

#: above this many bytes of stacked activations the pack measures trial by trial
STACKED_BYTES = 64 << 20


class PackedMeasures:
    """The after-epoch measurements of the ``trials`` of a pack whose parameters are
    the rows of ``P`` (row ``r`` is ``trials[r]``; see ``packed_stack.Pack``)."""

    def __init__(self, trials, P: np.ndarray):
        self.trials = trials
        net = trials[0].run.net
        self.net, self.k = net, len(trials)
        metrics = [t.metrics for t in trials]
        m0 = metrics[0]
        self.relu = m0.relu
        self.train_pass, self.has_val = m0.train_pass, m0.has_val
        base = net.params_flat
        self.weights: list[tuple[np.ndarray, np.ndarray | None]] = []
        for i, layer in enumerate(net.layers):
            if i == 0:
                self.weights.append((stacked(net.first_block, base, P), None))
            else:
                W = stacked(layer.params["W"], base, P)
                self.weights.append((W, stacked(layer.params["b"], base, P)[:, None, :]))
        widest = max(layer.n_out for layer in net.layers)
        rows = max(len(m0.X_train) if self.train_pass else 0, len(m0.X_val) if self.has_val else 0)
        self.enabled = (
            self.k > 1
            and self.k * min(rows, EVAL_CHUNK) * widest * net.dtype.itemsize * 2 <= STACKED_BYTES
        )
        if not self.enabled:
            return
        if self.train_pass:  # each trial's own sample (its seed drew it)
            self.X_train = np.stack([m.X_train for m in metrics])
            labels = [m.labels_train for m in metrics]
            self.labels_train = None if labels[0] is None else np.stack(labels)
        self._buffers: dict[int, list[np.ndarray]] = {}

    def measure(self) -> list[tuple]:
        """``EpochMetrics.measure()``'s tuple for every row of the stack."""
        if not self.enabled:
            return [t.metrics.measure() for t in self.trials]
        net, k = self.net, self.k
        active = [
            [
                np.zeros(layer.n_out, bool) if r else None
                for layer, r in zip(net.layers, self.relu, strict=True)
            ]
            for _ in range(k)
        ]
        train_acc: list = [None] * k
        val_loss: list = [None] * k
        val_acc: list = [None] * k
        m0 = self.trials[0].metrics
        if self.train_pass:
            _, acc = self._evaluate(self.X_train, None, self.labels_train, active)
            if m0.running is None:
                train_acc = acc
        if self.has_val:
            val_loss, val_acc = self._evaluate(
                m0.X_val, m0.Y_val, m0.labels_val, None if self.train_pass else active
            )
        out = []
        for r, trial in enumerate(self.trials):
            running = trial.metrics.running
            t_acc = running.value() if running is not None else train_acc[r]
            out.append((t_acc, val_loss[r], val_acc[r], active[r]))
        return out

    def _evaluate(self, X, Y, labels, active) -> tuple[list, list]:
        """Per row: the mean loss (``Y`` given) and accuracy (``labels`` given) over
        ``X`` (n, d) shared or (k, n, d) one per row, as ``Network.evaluate``."""
        net, k = self.net, self.k
        n = X.shape[-2]
        if n == 0:
            return [float("nan")] * k, [None] * k
        last = len(net.layers) - 1
        totals = [0.0] * k
        correct = np.zeros(k, np.int64)
        ones = np.ones(min(n, EVAL_CHUNK), net.dtype)
        for s in range(0, n, EVAL_CHUNK):
            A = X[..., s : s + EVAL_CHUNK, :]
            m = A.shape[-2]
            buffers = self._chunk_buffers(m)
            for i, layer in enumerate(net.layers):
                W, b = self.weights[i]
                Z = buffers[i]
                np.matmul(A, W, out=Z)
                if b is not None:
                    Z += b
                A = layer.activation.forward(Z, out=Z)
                if active is not None and self.relu[i]:
                    fired = np.matmul(ones[:m], A) > 0  # (k, units)
                    for r in range(k):
                        active[r][i] |= fired[r]
            if Y is not None:
                O = buffers[last + 1]  # F-ordered slices, as evaluate's copy
                np.copyto(O, A)
                Yc = Y[s : s + EVAL_CHUNK]
                for r in range(k):
                    totals[r] += net.loss.value(O[r], Yc) * m
            if labels is not None:
                lc = labels[..., s : s + EVAL_CHUNK]
                if A.shape[2] == 1:
                    threshold = 0.0 if net.fused else 0.5
                    hits = (A[:, :, 0] > threshold) == lc
                else:
                    hits = A.argmax(axis=2) == lc
                correct += np.count_nonzero(hits, axis=1)
        losses = [t / n for t in totals] if Y is not None else [None] * k
        accs = [int(c) / n for c in correct] if labels is not None else [None] * k
        return losses, accs

    def _chunk_buffers(self, m: int) -> list[np.ndarray]:
        buffers = self._buffers.get(m)
        if buffers is None:
            net, k = self.net, self.k
            buffers = [np.empty((k, m, layer.n_out), net.dtype) for layer in net.layers]
            buffers.append(np.empty((k, net.layers[-1].n_out, m), net.dtype).transpose(0, 2, 1))
            self._buffers[m] = buffers
        return buffers
