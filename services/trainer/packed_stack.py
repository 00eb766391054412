"""The members of a pack as stacked arrays, and one epoch of their training.

``Pack(trials, shared)`` stacks the trials' parameters into ``P`` (k,
n_params) and their gradients into ``G``, rebinds each trial's ``Network``
onto its row (so the solo code that measures, records and checkpoints a
trial reads and writes the pack's memory), groups the rows into segments
(``packed_optim``) and builds the stacked passes, batches and losses.
``Pack.train_epoch`` is ``fit``'s batch loop with a trial axis.

A trial whose batch loss is not finite is *frozen* at that batch, as the
solo loop breaks there: its parameters and optimizer state are kept aside
before the update, it draws no more dropout masks, and its row's further
arithmetic (in its own slices only) is thrown away when the epoch ends and
the kept state comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .epoch import GradientNorms
from .packed_optim import Segment, path_of
from .packed_pass import PackedBatches, PackedPass, packed_losses

GATHER_PER_EPOCH_BYTES = 8 << 20  # as train.GATHER_PER_EPOCH_BYTES, for the whole stack


@dataclass
class Shared:
    """What every trial of a pack shares: the training rows with a column of ones,
    their targets shaped like the outputs, the batches' row ranges."""

    X: np.ndarray
    Y: np.ndarray
    bounds: list[tuple[int, int]]
    norm_steps: list[int]  # the batches whose gradient norms a record takes


@dataclass
class Trial:
    """One trial of a pack: its solo ``_Run`` (spec, network, generator, tracker,
    records), its after-epoch metrics and callbacks, and its optimizer state while
    it is outside a stack."""

    index: int
    run: Any  # train._Run
    metrics: Any  # epoch_metrics.EpochMetrics
    on_epoch: Any = None
    on_checkpoint: Any = None
    checkpoint_due: Any = None
    opt_state: dict = field(default_factory=dict)
    t: int = 0
    lr: float = 0.0
    norms: Any = None  # its record's gradient norms, bound to its row (see Pack)
    frozen: tuple | None = None  # (params, optimizer state, steps) kept at a non-finite loss
    result: Any = None

    @property
    def path(self) -> tuple:
        return path_of(self.run.hp)


class Pack:
    """The stacked state of ``trials`` (in row order: rows of one path adjacent)."""

    def __init__(self, trials: list[Trial], shared: Shared):
        self.trials, self.shared = trials, shared
        k = len(trials)
        net0 = trials[0].run.net
        n_params, dtype = net0.n_params, net0.dtype
        self.P = P = np.empty((k, n_params), dtype)
        self.G = G = np.zeros((k, n_params), dtype)
        for r, trial in enumerate(trials):
            trial.run.net.rebind(P[r], G[r])
            trial.norms = GradientNorms(trial.run.net)
        self.segments: list[Segment] = []
        self.row_segment: list[tuple[Segment, int]] = []
        a = 0
        while a < k:
            b = a + 1
            while b < k and trials[b].path == trials[a].path:
                b += 1
            group = trials[a:b]
            seg = Segment(
                a,
                b,
                [t.run.hp for t in group],
                P,
                G,
                net0.n_weights,
                [t.opt_state for t in group],
                group[0].t,
            )
            self.segments.append(seg)
            self.row_segment += [(seg, j) for j in range(b - a)]
            a = b
        drop = np.array([[layer.dropout for layer in t.run.net.layers] for t in trials])
        sizes = {e - s for s, e in shared.bounds}
        self.passes = {m: PackedPass(net0, P, G, m, drop) for m in sizes}
        rngs = [t.run.rng for t in trials]
        for p in self.passes.values():
            p.rngs = rngs
        self.batches = PackedBatches(
            shared.X, shared.Y, shared.bounds, k, self.passes, GATHER_PER_EPOCH_BYTES
        )
        self.losses = packed_losses(net0.loss, shared.bounds, k, net0.layers[-1].n_out, dtype)
        self.perms = np.zeros((k, len(shared.X)), np.int64)
        self.live = np.ones(k, bool)  # not frozen this epoch, not left (masking)
        self.dead = np.zeros(k, bool)  # left the pack, row kept (masking)

    # --- moving trials in and out ---------------------------------------------------

    def sync(self, r: int) -> None:
        """Make trial ``r``'s solo optimizer hold its state (views), for a checkpoint."""
        trial = self.trials[r]
        opt = trial.run.optimizer
        if trial.frozen is not None:
            opt.state, opt.t = trial.frozen[1], trial.frozen[2]
            return
        seg, j = self.row_segment[r]
        opt.state, opt.t = seg.optimizer.rows(j), seg.optimizer.t

    def export(self, r: int) -> None:
        """Give trial ``r`` its own copies of its parameters and optimizer state."""
        trial = self.trials[r]
        self.sync(r)
        opt = trial.run.optimizer
        trial.opt_state = {key: value.copy() for key, value in opt.state.items()}
        opt.state, trial.t = trial.opt_state, opt.t
        net = trial.run.net
        net.rebind(self.P[r].copy(), np.zeros_like(self.G[r]))

    def kill(self, r: int) -> None:
        """Masking: trial ``r`` left; its row keeps computing, from zero weights at rate 0
        (so that it stays finite), and draws no masks."""
        self.live[r], self.dead[r] = False, True
        self._stop_drawing(r)
        self.P[r] = 0
        seg, j = self.row_segment[r]
        for value in seg.optimizer.state.values():
            value[j] = 0

    def _stop_drawing(self, r: int) -> None:
        for p in self.passes.values():
            for rows in p.draw_rows:
                if r in rows:
                    rows.remove(r)

    def _freeze(self, r: int) -> None:
        seg, j = self.row_segment[r]
        state = {key: value.copy() for key, value in seg.optimizer.rows(j).items()}
        self.trials[r].frozen = (self.P[r].copy(), state, seg.optimizer.t)
        self.live[r] = False
        self._stop_drawing(r)

    def thaw(self, r: int) -> None:
        """Bring back a frozen trial's kept state (at the end of its epoch)."""
        frozen = self.trials[r].frozen
        assert frozen is not None
        params, state, _ = frozen
        self.P[r] = params
        seg, j = self.row_segment[r]
        for key, value in state.items():
            seg.optimizer.state[key][j] = value

    # --- one epoch -------------------------------------------------------------------

    def start_epoch(self) -> None:
        """Each trial's rate (``trial.lr``, set by the caller; 0 for dead rows), the
        loss scales per batch, and each live trial's shuffled order."""
        trials, k = self.trials, len(self.trials)
        lr = np.array([0.0 if self.dead[r] else t.lr for r, t in enumerate(trials)])
        folded = np.zeros(k, bool)
        for seg in self.segments:
            folded[seg.a : seg.b] = seg.start_epoch(lr[seg.a : seg.b])
        dtype = self.P.dtype
        scaled, plain = {}, {}
        factor = self.losses.factor
        scales = [float(x) if f else 1.0 for x, f in zip(lr, folded, strict=True)]
        for m in self.passes:
            column = [dtype.type(factor(s, m)) for s in scales]
            scaled[m] = np.array(column, dtype).reshape(k, 1, 1)
            plain[m] = np.full((k, 1, 1), dtype.type(factor(1.0, m)), dtype)
        norm_steps = self.shared.norm_steps
        self.scales = [
            (plain if i in norm_steps else scaled)[e - s]
            for i, (s, e) in enumerate(self.shared.bounds)
        ]
        n = len(self.shared.X)
        for r, trial in enumerate(trials):
            if not self.dead[r]:
                self.perms[r] = trial.run.rng.permutation(n)
                trial.metrics.shuffle(self.perms[r])
            trial.norms.start()
            trial.frozen = None
        self.batches.shuffle(self.perms)

    def train_epoch(self, interrupt) -> bool:
        """``fit``'s batch loop for every trial at once; True if ``interrupt()`` stopped it."""
        trials, segments, losses = self.trials, self.segments, self.losses
        live, scales = self.live, self.scales
        norm_steps = set(self.shared.norm_steps)
        running = [
            (r, t.metrics.running) for r, t in enumerate(trials) if t.metrics.running is not None
        ]
        isfinite = np.isfinite
        with np.errstate(all="ignore"):
            for i, (Xb, Yb, Y_row, step) in enumerate(self.batches):
                if interrupt is not None and interrupt():
                    return True
                O = step.forward(Xb)
                loss = losses.batch(
                    i, O, Yb, Y_row, step.dO, step.dO_row, step.dO_column, scales[i]
                )
                if not isfinite(loss).all():  # a trial diverged: it stops at this batch
                    for row in np.flatnonzero(~isfinite(loss) & live).tolist():
                        self._freeze(row)
                for row, acc in running:
                    if live[row]:
                        acc.observe(i, O[row])
                step.backward(step.dO)
                for seg in segments:
                    seg.add_l2()
                measured = i in norm_steps
                if measured:
                    for row, trial in enumerate(trials):
                        if live[row]:
                            trial.norms.add()
                for seg in segments:
                    seg.clip_gradients()
                for seg in segments:
                    seg.step(measured)
        return False
