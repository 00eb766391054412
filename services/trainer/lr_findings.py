"""Diagnosis of the learning rate: ``lr_too_high`` and ``lr_too_low``, read off the losses.

A rate is too high when the training loss is finite but unstable, too low
when it falls slowly while the gradients are healthy. ``L_1 .. L_n`` are the
finite epoch training losses (each the mean of the epoch's mini-batch
losses) and ``L_ref`` the loss of an uninformed prediction: ``ln K`` for
cross-entropy over ``K`` classes, ``ln 2`` for binary cross-entropy, the
target variance for mean squared error (the first epoch's loss when
unknown). The measures, each in a finding's evidence:

``rise``
    the largest climb of the loss above its best so far ``m_e = min_{e' < e}
    L_e'``: ``max_e (L_e - m_e) / max(L_ref, m_e)``, with the epoch where it
    happened (``rise_epoch``), the loss it climbed from and to, and the rate
    of that epoch.
``upward``
    the loss's total upward movement: ``sum_e max(0, L_e - L_{e-1}) /
    max(L_ref, m_e)`` (0 for a loss that only falls; a bouncing loss piles it
    up).
``sign_changes``
    the share of the ``n - 2`` consecutive differences ``L_e - L_{e-1}``
    whose sign flips: 1.0 for a loss that goes up and down every epoch.
``progress``
    the share of the first epoch's loss removed by the last:
    ``(L_1 - L_n) / L_1``.
``late_share``
    the share of that decrease made in the last third of the epochs
    ``(L_{n-k} - L_n) / (L_1 - L_n)``, ``k = ceil(n / 3)``: about 1/3 for a
    loss still falling steadily, near 0 for one that has converged (or hit the
    capacity of the network).
``final``
    the last loss against the reference: ``L_n / L_ref``.
``first``
    the first epoch's loss against the reference, ``L_1 / L_ref``: a network
    that starts sane (He or Xavier initialization) is near 1 (the grid's
    runs at small rates: 1.0 to 2.2); far above it, the first updates
    overshot. ``first_over_best = L_1 / min_e L_e`` says how far the run came
    back down.

The climbs are taken against ``max(L_ref, m_e)`` so that the noise of a loss
still far above the reference (a bad initialization at a tiny rate) is no
climb, and a climb from a small loss counts at the scale of the task.

Rules (thresholds chosen on the runs of ``benchmarks/lr_diagnosis_table.py``,
table in ``docs/DIAGNOSIS.md``), on at least ``MIN_EPOCHS`` finite epochs:

- ``lr_too_high``: ``rise >= HIGH_RISE`` (a spike), or a blow-up in the first
  epoch that the run came back from but did not recover from: ``first >=
  HIGH_FIRST``, the best loss at least ``HIGH_FIRST`` times lower than the
  first (a loss that starts far above the reference and stays there is an
  initialization, not a rate) and ``final >= HIGH_FIRST_FINAL``; or ``upward
  >= HIGH_UPWARD`` with ``sign_changes >= HIGH_SIGN_CHANGES`` (it keeps
  bouncing). The suggestion divides the rate of the worst epoch by 10 when
  the spike or the blow-up is large (``rise >= 1`` or ``first >= 10``), by 3
  otherwise.
- ``lr_too_low``: at least ``LOW_MIN_EPOCHS`` finite epochs, no
  ``lr_too_high``, the gradients neither vanishing nor exploding, no ReLU
  layer half dead, ``final >= LOW_FINAL`` (at least 40% of the uninformed
  loss is left) and the loss still falling steadily: ``late_share >=
  LOW_LATE_SHARE``. (A loss that falls as ``exp(-t / tau)`` has a late share
  of 0.15 for ``tau = n / 2``: at its pace, the run would need half its epochs
  again to shed 63% of what is left. A plateau, which a network at its
  capacity shows as well as one stuck at a saddle, has under 0.1 and is not
  put down to the rate.) The suggestion multiplies the rate by 3 to 10.

A dead-ReLU finding is put down to the rate when ``lr_too_high`` fires and
the worst layer's dead fraction grew by at least ``DEAD_JUMP`` from the epoch
before a spike (before epoch 1: taken as 0, the untrained network) to the
spike's epoch or the next (the spike with the largest growth is named); its
message, evidence and suggestion then say so.
"""

from __future__ import annotations

import math

MIN_EPOCHS = 3
HIGH_RISE = 0.35
HIGH_FIRST = 3.0
HIGH_FIRST_FINAL = 0.1
HIGH_UPWARD = 0.75
HIGH_SIGN_CHANGES = 0.3
LOW_MIN_EPOCHS = 5
LOW_FINAL = 0.4
LOW_LATE_SHARE = 0.15
DEAD_FRACTION = 0.5  # as diagnostics.DEAD_FRACTION
DEAD_JUMP = 0.05


def lr_measures(finite: list[dict], reference_loss: float | None = None) -> dict | None:
    """The measures of the module docstring for records with a finite ``train_loss``
    (None for fewer than ``MIN_EPOCHS``). ``spike_epochs`` lists the epochs whose
    climb reached ``HIGH_RISE`` (epoch 1 when ``first >= HIGH_FIRST``)."""
    losses = [float(r["train_loss"]) for r in finite]
    n = len(losses)
    if n < MIN_EPOCHS or not all(math.isfinite(v) for v in losses):
        return None
    first, last = losses[0], losses[-1]
    ref = reference_loss if reference_loss and reference_loss > 0 else abs(first)
    ref = max(ref, 1e-12)
    spikes = [finite[0]["epoch"]] if first / ref >= HIGH_FIRST else []
    rise, rise_at, rise_from, best, upward = 0.0, 0, first, first, 0.0
    for e in range(1, n):
        scale = max(ref, best)  # a loss far above the reference climbs against itself
        climb = (losses[e] - best) / scale
        if climb > rise:
            rise, rise_at, rise_from = climb, e, best
        if climb >= HIGH_RISE:
            spikes.append(finite[e]["epoch"])
        upward += max(0.0, losses[e] - losses[e - 1]) / scale
        best = min(best, losses[e])
    diffs = [losses[e] - losses[e - 1] for e in range(1, n)]
    flips = sum(1 for a, b in zip(diffs, diffs[1:], strict=False) if a * b < 0)
    k = math.ceil(n / 3)
    drop, late = first - last, losses[n - 1 - k] - last
    return {
        "reference_loss": ref,
        "first": first / ref,
        "first_over_best": first / max(min(losses), 1e-12),
        "rise": rise,
        "rise_epoch": finite[rise_at]["epoch"] if rise > 0 else None,
        "rise_from": rise_from,
        "rise_to": losses[rise_at],
        "upward": upward,
        "sign_changes": flips / (n - 2),
        "progress": drop / max(abs(first), 1e-12),
        "late_share": late / drop if drop > 0 else 0.0,
        "final": last / ref,
        "epochs": n,
        "spike_epochs": spikes,
    }


def _rate(finite: list[dict], epoch: int | None) -> float | None:
    """The learning rate of ``epoch`` (the last epoch's when None)."""
    for r in finite:
        if r["epoch"] == epoch:
            return r.get("learning_rate")
    return finite[-1].get("learning_rate") if finite else None


def _evidence(m: dict, keys: tuple[str, ...]) -> dict:
    """The measures ``keys`` of ``m``, floats to 4 significant digits."""
    return {k: float(f"{m[k]:.4g}") if isinstance(m[k], float) else m[k] for k in keys}


def _fmt(lr: float) -> str:
    return f"{lr:.3g}"


def lr_too_high(finite: list[dict], m: dict) -> list[dict]:
    """The loss spiked, blew up in the first epoch, or keeps bouncing (see the module)."""
    spike = m["rise"] >= HIGH_RISE
    blown = (
        m["first"] >= HIGH_FIRST
        and m["first_over_best"] >= HIGH_FIRST
        and m["final"] >= HIGH_FIRST_FINAL
    )
    bouncing = m["upward"] >= HIGH_UPWARD and m["sign_changes"] >= HIGH_SIGN_CHANGES
    if not (spike or blown or bouncing):
        return []
    worst = m["rise_epoch"] if spike or not blown else finite[0]["epoch"]
    lr = _rate(finite, worst)
    factor = 10 if m["rise"] >= 1.0 or m["first"] >= 10.0 else 3
    reasons = []
    if blown:
        reasons.append(f"the first epoch's loss was {m['first']:.3g}x that of an uninformed guess")
    if spike:
        reasons.append(
            f"in epoch {m['rise_epoch']} it climbed from {m['rise_from']:.3g}, its best so "
            f"far, to {m['rise_to']:.3g}"
        )
    if bouncing and not spike:
        reasons.append(
            f"it went up and down ({m['sign_changes']:.0%} of its steps change direction, "
            f"{m['upward']:.2g}x the reference loss upward in all)"
        )
    evidence = _evidence(
        m,
        (
            "first",
            "first_over_best",
            "final",
            "rise",
            "rise_epoch",
            "rise_from",
            "rise_to",
            "upward",
            "sign_changes",
        ),
    )
    evidence["reference_loss"] = m["reference_loss"]
    evidence.update(learning_rate=lr, spike_epochs=m["spike_epochs"], divide_by=factor)
    suggestion = "Lower the learning rate"
    if lr:
        suggestion += f": try learning_rate <= {_fmt(lr / factor)} (current {_fmt(lr)}, /{factor})"
    return [
        {
            "code": "lr_too_high",
            "message": "The learning rate is too high: the training loss is unstable ("
            + "; ".join(reasons)
            + ").",
            "evidence": evidence,
            "suggestion": suggestion + ", or add gradient_clip_norm or a warmup.",
        }
    ]


def lr_too_low(finite: list[dict], m: dict, gradients_ok: bool) -> list[dict]:
    """Most of the loss is left and it is still falling, with healthy gradients."""
    dead = [d for d in (finite[-1].get("dead_relu_fraction") or []) if d is not None]
    if not gradients_ok or max(dead, default=0.0) >= DEAD_FRACTION:
        return []
    if m["epochs"] < LOW_MIN_EPOCHS or m["final"] < LOW_FINAL:
        return []
    if m["late_share"] < LOW_LATE_SHARE:  # converged, or at the network's capacity
        return []
    lr = _rate(finite, None)
    evidence = _evidence(m, ("final", "progress", "late_share", "reference_loss", "epochs"))
    evidence.update(learning_rate=lr, multiply_by=[3, 10])
    suggestion = "Raise the learning rate"
    if lr:
        suggestion += (
            f": try learning_rate {_fmt(3 * lr)} to {_fmt(10 * lr)} (current {_fmt(lr)}, x3 to x10)"
        )
    return [
        {
            "code": "lr_too_low",
            "message": f"The learning rate is too low: after {m['epochs']} epochs the training "
            f"loss is still {m['final']:.0%} of an uninformed guess's and still falling "
            f"({m['late_share']:.0%} of its fall came in the last third of the epochs).",
            "evidence": evidence,
            "suggestion": suggestion + " (a learning-rate range test, lr-range-tests, finds it).",
        }
    ]


def blame_dead_relus(findings: list[dict], finite: list[dict], m: dict) -> None:
    """Say in the ``dead_relus`` finding when its units died right after a loss spike."""
    dead_finding = next((f for f in findings if f["code"] == "dead_relus"), None)
    if dead_finding is None or not any(f["code"] == "lr_too_high" for f in findings):
        return
    worst = [
        max((d for d in (r.get("dead_relu_fraction") or []) if d is not None), default=0.0)
        for r in finite
    ]
    index = {r["epoch"]: i for i, r in enumerate(finite)}
    jumps = []  # (growth, spike epoch, before, after)
    for epoch in m["spike_epochs"]:
        i = index[epoch]
        before = worst[i - 1] if i > 0 else 0.0
        after = max(worst[i : i + 2])
        jumps.append((after - before, epoch, before, after))
    growth, epoch, before, after = max(jumps, default=(0.0, None, 0.0, 0.0))
    if growth >= DEAD_JUMP:
        dead_finding["message"] += (
            f" Most died right after the loss spiked in epoch {epoch} ({before:.0%} dead "
            f"before it, {after:.0%} after): the learning rate is too high."
        )
        dead_finding["evidence"].update(
            caused_by="lr_too_high",
            spike_epoch=epoch,
            dead_before_spike=before,
            dead_after_spike=after,
        )
        dead_finding["suggestion"] = "Lower the learning rate (see lr_too_high), or use leaky_relu."
