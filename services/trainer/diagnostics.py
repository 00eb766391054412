"""Diagnosis: what went wrong in a run, read off its history.

``diagnose(history, ...)`` returns a list of findings, each a dict with a
``code``, a plain ``message``, the ``evidence`` (numbers and epochs) and a
``suggestion``. An empty list means the run looks healthy. The rules are
deliberately simple thresholds on the per-epoch records:

==================== =========================================================
code                 fires when
==================== =========================================================
diverged             the loss or a weight became non-finite
not_learning         the training loss (above 1e-6) fell by less than 1% over
                     >= 3 epochs
vanishing_gradients  median ||dW_first|| / ||dW_last|| < 1e-3
exploding_gradients  that ratio > 1e3, a layer's gradient norm > 1e3, or the
                     gradient norm grew 1000-fold during training
dead_relus           >= 50% of a ReLU layer's units fired on no example
overfitting          >= 3 epochs after its best, the validation loss is up
                     >= 10% (and >= 0.005) over the median of the last 3
                     epochs (the last keeps half of it), the training loss
                     fell since that best and is
                     now >= 10% below the validation loss, and the gap
                     between them grew by >= 10% of the best validation loss
underfitting         final training accuracy < 0.8 (classification) or
                     R^2 on the training set < 0.5 (regression)
lr_too_high          a finite but unstable training loss: it climbed well above
                     its best, blew up in the first epoch, or keeps bouncing
                     (measures and thresholds in ``lr_findings``)
lr_too_low           >= 40% of an uninformed guess's loss is left and the
                     loss is still falling, with healthy gradients
==================== =========================================================

The learning-rate findings are not given to a diverged run (its ``diverged``
finding already names the rate); a ``dead_relus`` finding whose units died
right after a loss spike says so (``evidence.caused_by = "lr_too_high"``).
"""

from __future__ import annotations

import math
import statistics

from .lr_findings import blame_dead_relus, lr_measures, lr_too_high, lr_too_low

NOT_LEARNING_REL = 0.01
NOT_LEARNING_FLOOR = 1e-6  # a training loss this low from the start is learnt
VANISHING_RATIO = 1e-3
EXPLODING_RATIO = 1e3
EXPLODING_NORM = 1e3
DEAD_FRACTION = 0.5
OVERFIT_RISE = 0.10
OVERFIT_EPOCHS = 3
OVERFIT_MIN_RISE = 0.005
UNDERFIT_ACCURACY = 0.8
UNDERFIT_R2 = 0.5


def _finding(code: str, message: str, evidence: dict, suggestion: str) -> dict:
    return {"code": code, "message": message, "evidence": evidence, "suggestion": suggestion}


def _global_norm(norms: list) -> float | None:
    if not norms or any(g is None for g in norms):
        return None
    return math.sqrt(sum(g * g for g in norms))


def diagnose(
    history: list[dict],
    *,
    status: str = "completed",
    task: str = "classification",
    diverged_epoch: int | None = None,
    baseline_loss: float | None = None,
    reference_loss: float | None = None,
) -> list[dict]:
    """Findings for a run's ``history`` (list of epoch records), one rule after another.

    Parameters
    ----------
    status : the run's final status (``"diverged"`` adds that finding)
    task : ``"classification"`` or ``"regression"``
    baseline_loss : for regression, the MSE of predicting the training mean
        (the target variance), used for R^2.
    reference_loss : the loss of an uninformed prediction, the scale of the
        learning-rate findings (``ln K`` for cross-entropy over ``K`` classes,
        ``ln 2`` for binary cross-entropy); ``baseline_loss`` when None for
        regression, else the first epoch's training loss.
    """
    finite = [
        r for r in history if r.get("train_loss") is not None and r.get("epoch") != diverged_epoch
    ]
    findings: list[dict] = []
    if status == "diverged":
        findings += _diverged(history, finite, diverged_epoch)
    not_learning = _not_learning(finite)
    overfitting = _overfitting(finite)
    gradients = _gradients(history, finite)
    findings += not_learning + gradients + _dead_relus(finite) + overfitting
    if finite and status != "diverged" and not not_learning and not overfitting:
        findings += _underfitting(finite[-1], task, baseline_loss)
    if reference_loss is None and task == "regression":
        reference_loss = baseline_loss
    measures = lr_measures(finite, reference_loss) if status != "diverged" else None
    if measures is not None:
        high = lr_too_high(finite, measures)
        findings += high or lr_too_low(finite, measures, gradients_ok=not gradients)
        blame_dead_relus(findings, finite, measures)
        if high:
            _defer_to_a_high_rate(findings, "lr_too_high")
    if status == "diverged":
        _defer_to_a_high_rate(findings, "diverged")
    return findings


def _diverged(history: list[dict], finite: list[dict], diverged_epoch) -> list[dict]:
    """The run's loss or weights became non-finite."""
    findings: list[dict] = []
    last = finite[-1] if finite else None
    findings.append(
        _finding(
            "diverged",
            f"Training diverged in epoch {diverged_epoch}: the loss or the weights "
            "became infinite or NaN.",
            {
                "epoch": diverged_epoch,
                "learning_rate": history[-1].get("learning_rate") if history else None,
                "last_finite_train_loss": last["train_loss"] if last else None,
                "last_finite_epoch": last["epoch"] if last else None,
            },
            "Lower the learning rate (try 10x smaller), or add gradient_clip_norm.",
        )
    )
    return findings


def _not_learning(finite: list[dict]) -> list[dict]:
    """The training loss barely moved over >= 3 epochs."""
    findings: list[dict] = []
    if len(finite) >= 3:
        first = finite[0]["train_loss"]
        best = min(r["train_loss"] for r in finite)
        rel = (first - best) / max(abs(first), 1e-12)
        if rel < NOT_LEARNING_REL and first > NOT_LEARNING_FLOOR:  # not: nothing left to learn
            dead = [d for d in (finite[-1].get("dead_relu_fraction") or []) if d is not None]
            all_dead = any(d >= 1.0 for d in dead)
            findings.append(
                _finding(
                    "not_learning",
                    "The training loss stayed flat"
                    + (
                        ": a ReLU layer is completely dead."
                        if all_dead
                        else ": the learning rate is probably too low."
                    ),
                    {
                        "first_train_loss": first,
                        "best_train_loss": best,
                        "relative_improvement": rel,
                        "epochs": len(finite),
                        "learning_rate": finite[-1].get("learning_rate"),
                    },
                    (
                        "A dead layer passes no gradient, so no learning rate revives it: "
                        "see dead_relus (lower the learning rate, use leaky_relu or He "
                        "initialization)."
                    )
                    if all_dead
                    else "Raise the learning rate (a range test finds a good one: "
                    "`sweeplab lr-find`, POST /api/v1/lr-range-tests).",
                )
            )
    return findings


def _defer_to_a_high_rate(findings: list[dict], because: str) -> None:
    """With ``lr_too_high`` or ``diverged`` (``because``), a flat loss or a poor fit is
    no sign of a low rate: the findings that would advise raising it say to lower it."""
    for f in findings:
        if f["code"] == "not_learning":
            f["message"] = (
                "The training loss did not improve on its first epoch: the learning rate "
                f"is too high (see {because})."
            )
            f["suggestion"] = f"Lower the learning rate (see {because})."
        elif f["code"] == "underfitting":
            f["suggestion"] = (
                f"Lower the learning rate first (see {because}); if it still underfits, "
                "use a larger network or train longer."
            )


def _gradients(history: list[dict], finite: list[dict]) -> list[dict]:
    """Vanishing (first layer's gradient tiny against the last's) or exploding gradients."""
    findings: list[dict] = []
    ratios = []
    for r in finite:
        g = r.get("grad_norm") or []
        if len(g) >= 2 and g[0] is not None and g[-1] is not None and g[-1] > 0 and g[0] > 0:
            ratios.append(g[0] / g[-1])
    if ratios:
        ratio = statistics.median(ratios)
        if ratio < VANISHING_RATIO:
            findings.append(
                _finding(
                    "vanishing_gradients",
                    f"The first layer's gradient is {ratio:.1e} times the last layer's: "
                    "early layers barely learn.",
                    {
                        "median_first_to_last_grad_ratio": ratio,
                        "grad_norm_last_epoch": finite[-1].get("grad_norm"),
                    },
                    "Use relu or leaky_relu instead of sigmoid/tanh, He initialization, "
                    "or fewer layers.",
                )
            )

    norms: list[tuple[int, float]] = []
    for r in history:
        g = _global_norm(r.get("grad_norm") or [])
        if g is not None and g > 0:
            norms.append((r["epoch"], g))
    median_ratio = statistics.median(ratios) if ratios else None
    reasons = []
    if median_ratio is not None and median_ratio > EXPLODING_RATIO:
        reasons.append("from the last layer back to the first")
    peak = max(norms, key=lambda eg: eg[1]) if norms else (0, 0.0)
    if peak[1] > EXPLODING_NORM:
        reasons.append(f"to {peak[1]:.3g} in epoch {peak[0]}")
    if norms and peak[1] > EXPLODING_RATIO * norms[0][1]:
        reasons.append(f"{peak[1] / norms[0][1]:.3g}-fold during training")
    if reasons:
        findings.append(
            _finding(
                "exploding_gradients",
                "Gradient norms grew by orders of magnitude: " + "; ".join(reasons) + ".",
                {
                    "first_epoch_grad_norm": norms[0][1] if norms else None,
                    "peak_grad_norm": peak[1] if norms else None,
                    "peak_epoch": peak[0] if norms else None,
                    "median_first_to_last_grad_ratio": median_ratio,
                },
                "Set gradient_clip_norm (e.g. 1.0), lower the learning rate, or use a "
                "smaller initialization (he / xavier).",
            )
        )
    return findings


def _dead_relus(finite: list[dict]) -> list[dict]:
    """Most units of a ReLU layer fired on no example after the last epoch."""
    if not finite:
        return []
    findings: list[dict] = []
    dead = finite[-1].get("dead_relu_fraction") or []
    worst = max((d for d in dead if d is not None), default=0.0)
    if worst >= DEAD_FRACTION:
        findings.append(
            _finding(
                "dead_relus",
                f"{worst:.0%} of the units in a ReLU layer never fire: they no longer learn.",
                {"dead_relu_fraction": dead, "epoch": finite[-1]["epoch"]},
                "Lower the learning rate, use leaky_relu, or He initialization.",
            )
        )
    return findings


def _overfitting(finite: list[dict]) -> list[dict]:
    """A sustained rise of the validation loss while the training loss kept falling."""
    findings: list[dict] = []
    val = [r for r in finite if r.get("val_loss") is not None]
    if len(val) >= OVERFIT_EPOCHS + 1:
        best = min(val, key=lambda r: r["val_loss"])
        last = val[-1]
        # a sustained rise (not one noisy epoch), of the validation loss
        # against the training loss (not a run that got worse everywhere)
        recent = statistics.median(r["val_loss"] for r in val[-OVERFIT_EPOCHS:])
        rise = recent - best["val_loss"]
        gap_growth = (last["val_loss"] - last["train_loss"]) - (
            best["val_loss"] - best["train_loss"]
        )
        if (
            last["epoch"] - best["epoch"] >= OVERFIT_EPOCHS
            and rise > max(OVERFIT_RISE * best["val_loss"], OVERFIT_MIN_RISE)
            # the last epoch keeps at least half of that rise (not a spike recovering)
            and last["val_loss"] - best["val_loss"] >= rise / 2
            and last["train_loss"] < best["train_loss"]
            and last["val_loss"] > (1 + OVERFIT_RISE) * last["train_loss"]
            and gap_growth > OVERFIT_RISE * best["val_loss"]
        ):
            findings.append(
                _finding(
                    "overfitting",
                    f"The validation loss has risen since epoch {best['epoch']} while the "
                    "training loss kept falling: the network memorizes the training set.",
                    {
                        "best_val_epoch": best["epoch"],
                        "best_val_loss": best["val_loss"],
                        "last_epoch": last["epoch"],
                        "last_val_loss": last["val_loss"],
                        "train_loss_at_best": best["train_loss"],
                        "last_train_loss": last["train_loss"],
                    },
                    "Add early_stopping, l2 or dropout, use a smaller network, or more data.",
                )
            )
    return findings


def _underfitting(last: dict, task: str, baseline_loss: float | None) -> list[dict]:
    """Low accuracy (or R^2) on the training set itself, from the last epoch."""
    findings: list[dict] = []
    if task == "classification" and last.get("train_accuracy") is not None:
        if last["train_accuracy"] < UNDERFIT_ACCURACY:
            findings.append(
                _finding(
                    "underfitting",
                    f"Even on the training set the accuracy is only {last['train_accuracy']:.1%}.",
                    {
                        "train_accuracy": last["train_accuracy"],
                        "val_accuracy": last.get("val_accuracy"),
                        "epoch": last["epoch"],
                    },
                    "Use a larger network, train longer, or raise the learning rate.",
                )
            )
    elif task == "regression" and baseline_loss:
        r2 = 1.0 - last["train_loss"] / baseline_loss
        if r2 < UNDERFIT_R2:
            findings.append(
                _finding(
                    "underfitting",
                    f"The network explains only {r2:.0%} of the training targets' variance.",
                    {
                        "train_r2": r2,
                        "train_loss": last["train_loss"],
                        "target_variance": baseline_loss,
                        "epoch": last["epoch"],
                    },
                    "Use a larger network, train longer, or raise the learning rate.",
                )
            )
    return findings
