"""The training loop: records, statuses, early stopping, divergence, resume, reproducibility.

Floating-point comparisons follow tests/numerics.py: bit-for-bit equality only
between identical computations (a resumed run and the uninterrupted one, the
same spec twice, the two gather strategies that build the same batches); a
tolerance derived from the dtype's epsilon and the reduction lengths for
anything else (one row against a batch, the loss summed another way, a value
recomputed outside ``fit``, a checkpoint written on another machine).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from services.trainer import (
    Network,
    SpecError,
    TrainResult,
    build_network,
    checkpoint,
    dataset_from_arrays,
    fit,
    flatten_record,
    load_dataset,
    parse_spec,
)
from services.trainer.schedules import learning_rate
from tests.numerics import assert_close, network_reduction, rounding_rtol

from .conftest import make_spec, strip_seconds

RECORD_KEYS = {
    "epoch",
    "train_loss",
    "val_loss",
    "train_accuracy",
    "val_accuracy",
    "learning_rate",
    "grad_norm",
    "weight_norm",
    "dead_relu_fraction",
    "seconds",
}


def test_fit_learns_moons_and_records_every_epoch():
    records = []
    result = fit(
        make_spec(hyperparameters={"epochs": 20, "optimizer": "adam", "learning_rate": 0.01}),
        on_epoch=records.append,
    )
    assert isinstance(result, TrainResult) and result.status == "completed"
    assert records == result.history and [r["epoch"] for r in records] == list(range(1, 21))
    for r in records:
        assert set(r) == RECORD_KEYS
        assert len(r["grad_norm"]) == len(r["weight_norm"]) == len(r["dead_relu_fraction"]) == 2
        assert r["dead_relu_fraction"][1] is None and 0 <= r["dead_relu_fraction"][0] <= 1
        json.dumps(r, allow_nan=False)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["val_accuracy"] > 0.85
    summary = result.summary()
    json.dumps(summary, allow_nan=False)
    assert summary["status"] == "completed" and summary["best_epoch"] == result.best_epoch
    assert "history" not in summary and "network" not in summary
    assert result.best_metrics["val_loss"] == min(r["val_loss"] for r in records)
    assert result.diverged_epoch is None and result.seconds > 0
    assert isinstance(result.network, Network)
    assert (
        Network.from_npz_bytes(result.network.to_npz_bytes()).params_flat.tobytes()
        == result.network.params_flat.tobytes()
    )


def test_regression_records_have_no_accuracy():
    result = fit(
        make_spec(dataset={"name": "sine", "n_samples": 200}, hyperparameters={"epochs": 3})
    )
    assert "train_accuracy" not in result.history[0] and "val_accuracy" not in result.history[0]
    assert result.network.loss.name == "mse"


def test_train_loss_is_the_mean_of_batch_losses_before_each_update():
    """Full batch: the epoch's train loss equals the loss of the weights it started with."""
    spec = make_spec(hyperparameters={"batch_size": None, "epochs": 3, "dtype": "float64"})
    data = load_dataset(spec["dataset"])
    net = build_network(spec, data)
    Y = net.encode_targets(data.y_train)
    start_loss = net.loss.value(net.forward(data.X_train), Y)
    result = fit(spec, data=data, network=net)
    # fit folds the bias into its first product and sums the loss its own way
    reduction = network_reduction(net.sizes) + len(data.X_train)
    assert result.history[0]["train_loss"] == pytest.approx(
        start_loss, rel=rounding_rtol(np.float64, reduction)
    )
    # and train_accuracy is measured after the epoch's updates
    correct = net.correct(net.forward(data.X_train), data.y_train)
    assert result.history[-1]["train_accuracy"] == correct / len(data.X_train)


def test_flatten_record():
    record = {
        "epoch": 3,
        "train_loss": 0.5,
        "val_loss": None,
        "grad_norm": [1.0, 2.0],
        "dead_relu_fraction": [0.25, None],
        "seconds": 0.1,
    }
    assert flatten_record(record) == {
        "epoch": 3.0,
        "train_loss": 0.5,
        "grad_norm.layer_0": 1.0,
        "grad_norm.layer_1": 2.0,
        "dead_relu_fraction.layer_0": 0.25,
        "seconds": 0.1,
    }


@pytest.mark.parametrize("batch_size, steps", [(None, 1), (1, 160), (50, 4)])
def test_gradient_descent_forms(batch_size, steps):
    """Full batch, stochastic and mini-batch: one optimizer step per batch."""
    spec = make_spec(
        hyperparameters={
            "batch_size": batch_size,
            "epochs": 2,
            "optimizer": "adam",
            "learning_rate": 1e-3,
        }
    )
    blobs = []  # adam counts its steps; read the count from a checkpoint
    result = fit(spec, checkpoint_every=1, on_checkpoint=lambda e, b: blobs.append(b))
    assert result.status == "completed"
    from services.trainer.checkpoint import load_checkpoint

    assert load_checkpoint(blobs[0]).meta["optimizer"]["t"] == steps


def test_callback_can_stop_training():
    result = fit(make_spec(hyperparameters={"epochs": 10}), on_epoch=lambda r: r["epoch"] == 3)
    assert result.status == "stopped" and len(result.history) == 3


def test_divergence_stops_at_once_with_the_epoch():
    seen = []
    result = fit(
        make_spec(
            dataset={"name": "sine", "n_samples": 200},
            architecture={"layers": [{"units": 32}, {"units": 32}]},
            hyperparameters={"learning_rate": 10.0, "epochs": 50},
        ),
        on_epoch=seen.append,
    )
    assert result.status == "diverged"
    assert result.diverged_epoch == len(result.history) == len(seen) < 50
    last = result.history[-1]
    assert last["train_loss"] is None or last["val_loss"] is None
    for record in result.history:
        json.dumps(record, allow_nan=False)  # None, never NaN/inf
    for record in result.history[:-1]:
        assert math.isfinite(record["train_loss"])
    assert [d["code"] for d in result.diagnosis][0] == "diverged"
    json.dumps(result.summary(), allow_nan=False)


def _count_optimizer_steps(monkeypatch) -> list[int]:
    from services.trainer import train

    steps: list[int] = []
    get_optimizer = train.get_optimizer

    def spy_optimizer(*args, **kwargs):
        optimizer = get_optimizer(*args, **kwargs)
        step = optimizer.step
        optimizer.step = lambda *a: (steps.append(1), step(*a))
        return optimizer

    monkeypatch.setattr(train, "get_optimizer", spy_optimizer)
    return steps


@pytest.mark.parametrize(
    ("dataset", "loss"),
    [({"name": "sine", "n_samples": 200}, "mse"), ({"name": "digits"}, "cross_entropy")],
)
def test_divergence_ends_the_epoch_at_the_first_non_finite_batch(monkeypatch, dataset, loss):
    from services.trainer.losses import LOSSES

    spec = make_spec(
        dataset=dataset,
        architecture={"layers": [{"units": 32}, {"units": 32}]},
        hyperparameters={
            "learning_rate": 1e3 if loss == "mse" else 1e6,
            "epochs": 5,
            "batch_size": 4,
        },
    )
    # per batch what fit checks: the loss, or for cross-entropy the picked
    # logits' sum that CrossEntropy.gradient returns (finite iff the loss is)
    values: list[float] = []
    method = "gradient" if loss == "cross_entropy" else "forward_backward"
    original = getattr(LOSSES[loss], method)

    def spy(self, *args):
        values.append(original(self, *args))
        return values[-1]

    monkeypatch.setattr(LOSSES[loss], method, spy)
    steps = _count_optimizer_steps(monkeypatch)
    result = fit(spec)

    n_batches = math.ceil(len(result.data.X_train) / 4)
    assert result.status == "diverged" and result.diverged_epoch == len(result.history)
    assert len(values) < result.diverged_epoch * n_batches  # stopped inside the epoch
    assert not math.isfinite(values[-1]) and all(map(math.isfinite, values[:-1]))
    assert len(steps) == len(values) - 1  # no update from the non-finite batch
    last = result.history[-1]
    assert last["train_loss"] is None and last["val_loss"] is None
    assert len(last["grad_norm"]) == len(last["dead_relu_fraction"]) == 3
    json.dumps(last, allow_nan=False)
    assert all(math.isfinite(r["train_loss"]) for r in result.history[:-1])


def test_training_buffers_per_batch_size_and_none_per_evaluation_chunk():
    spec = make_spec(hyperparameters={"epochs": 2, "batch_size": 32})
    result = fit(spec)
    net = result.network
    trained = set(net._passes)
    assert trained == {32, len(result.data.X_train) % 32} - {0}
    net.predict(np.zeros((1000, 2)))
    net.evaluate(np.zeros((777, 2), np.float32), np.zeros((777, 1), np.float32))
    assert set(net._passes) == trained
    relu = net.layers[0].activation
    assert {width for width, _ in relu._zero_rows} == {16}  # a row per width, not per shape


def _overfit_spec(**es):
    return make_spec(
        dataset={"name": "moons", "n_samples": 40, "noise": 0.4, "validation_split": 0.5},
        architecture={"layers": [{"units": 128}, {"units": 128}]},
        hyperparameters={
            "optimizer": "adam",
            "learning_rate": 0.01,
            "epochs": 150,
            "batch_size": None,
            "early_stopping": es or None,
        },
    )


def test_early_stopping_patience_and_restore_best():
    result = fit(_overfit_spec(patience=4))
    assert result.status == "early_stopped"
    val = [r["val_loss"] for r in result.history]
    best = result.best_epoch
    assert val[best - 1] == min(val)
    assert len(result.history) == best + 4
    # the returned network holds the best epoch's weights
    data = load_dataset(_overfit_spec()["dataset"])
    net = result.network
    loss, _ = net.evaluate(
        data.X_val.astype(np.float32), net.encode_targets(data.y_val), data.y_val
    )
    # fit evaluated with the bias folded into the first product: another order of sums
    reduction = network_reduction(net.sizes) + len(data.X_val)
    assert loss == pytest.approx(val[best - 1], rel=rounding_rtol(np.float32, reduction))


def test_restore_best_hands_back_the_best_weights_of_a_diverged_run():
    spec = make_spec(
        dataset={"name": "digits"},
        architecture={"layers": [{"units": 32}]},
        # the warm-up takes the rate from 0.5 up by 0.5 an epoch: it diverges at 3.5
        hyperparameters={
            "optimizer": "sgd",
            "learning_rate": 5.0,
            "epochs": 10,
            "batch_size": 32,
            "early_stopping": {"patience": 10, "restore_best": True},
            "lr_schedule": {"name": "constant", "warmup_epochs": 10},
        },
    )
    result = fit(spec)
    assert result.status == "diverged" and result.best_epoch is not None
    assert result.best_epoch < len(result.history)
    assert np.isfinite(result.network.params_flat).all()
    data = result.data
    assert data is not None
    best = result.history[result.best_epoch - 1]
    val_loss, _ = result.network.evaluate(data.X_val, data.y_val)
    reduction = network_reduction(result.network.sizes) + len(data.X_val)
    assert val_loss == pytest.approx(best["val_loss"], rel=rounding_rtol(np.float32, reduction))


def test_early_stopping_min_delta_and_no_restore():
    result = fit(_overfit_spec(patience=3, min_delta=10.0, restore_best=False))
    assert result.status == "early_stopped" and result.best_epoch == 1
    assert len(result.history) == 4
    plain = fit(_overfit_spec(patience=3, min_delta=10.0, restore_best=False))
    assert np.array_equal(plain.network.params_flat, result.network.params_flat)


def test_early_stopping_on_accuracy_maximizes():
    result = fit(_overfit_spec(metric="val_accuracy", patience=5))
    acc = [r["val_accuracy"] for r in result.history]
    assert acc[result.best_epoch - 1] == max(acc)
    assert acc.index(max(acc)) == result.best_epoch - 1  # first epoch reaching the best


RESUME_SPEC = make_spec(
    dataset={"name": "spirals", "n_samples": 150, "noise": 0.2},
    architecture={"layers": [{"units": 24}, {"units": 12, "activation": "tanh"}]},
    hyperparameters={
        "optimizer": "adam",
        "learning_rate": 0.01,
        "epochs": 9,
        "batch_size": 16,
        "dropout": 0.2,
        "l2": 1e-3,
        "gradient_clip_norm": 5.0,
        "lr_schedule": {"name": "cosine", "warmup_epochs": 2},
        "early_stopping": {"patience": 50},
    },
)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_equals_uninterrupted_bit_for_bit(optimizer):
    spec = make_spec(**{k: v for k, v in RESUME_SPEC.items() if k != "name"})
    spec["hyperparameters"]["optimizer"] = optimizer
    if optimizer == "sgd":
        spec["hyperparameters"].update(momentum=0.9, nesterov=True, learning_rate=0.05)
    blobs = {}
    full = fit(spec, checkpoint_every=3, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    assert sorted(blobs) == [3, 6] and all(isinstance(b, bytes) for b in blobs.values())
    for epoch, blob in blobs.items():
        seen = []
        resumed = fit(spec, resume_from=blob, history=full.history[:epoch], on_epoch=seen.append)
        assert [r["epoch"] for r in seen] == list(range(epoch + 1, 10))
        assert strip_seconds(resumed.history) == strip_seconds(full.history)
        assert resumed.network.params_flat.tobytes() == full.network.params_flat.tobytes()
        assert resumed.best_epoch == full.best_epoch and resumed.status == full.status
        assert resumed.best_metrics == full.best_metrics
        assert resumed.diagnosis == full.diagnosis


def test_resume_after_early_stopping_state():
    spec = _overfit_spec(patience=6)
    blobs = {}
    full = fit(spec, checkpoint_every=1, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    assert full.status == "early_stopped"
    mid = max(e for e in blobs if e > full.best_epoch)  # inside the patience window
    resumed = fit(spec, resume_from=blobs[mid], history=full.history[:mid])
    assert strip_seconds(resumed.history) == strip_seconds(full.history)
    assert resumed.network.params_flat.tobytes() == full.network.params_flat.tobytes()
    assert resumed.best_epoch == full.best_epoch
    assert resumed.diagnosis == full.diagnosis


@pytest.mark.parametrize(
    "dataset",
    [{"name": "spirals", "n_samples": 150, "noise": 0.2}, {"name": "sine", "n_samples": 100}],
)
def test_resume_from_flat_records_as_a_database_keeps_them(dataset):
    """The service stores ``flatten_record`` rows as JSON; they are history enough."""
    spec = make_spec(**{k: v for k, v in RESUME_SPEC.items() if k != "name"})
    spec["dataset"] = dataset
    blobs = {}
    full = fit(spec, checkpoint_every=3, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    rows = [json.loads(json.dumps(flatten_record(r))) for r in full.history[:6]]
    resumed = fit(spec, resume_from=blobs[6], history=rows)
    assert resumed.history == full.history[:6] + resumed.history[6:]
    assert strip_seconds(resumed.history) == strip_seconds(full.history)
    assert resumed.diagnosis == full.diagnosis and resumed.best_metrics == full.best_metrics


def test_checkpoints_do_not_grow_with_the_run():
    blobs = {}
    fit(
        make_spec(hyperparameters={"epochs": 40}),
        checkpoint_every=10,
        on_checkpoint=lambda e, b: blobs.setdefault(e, b),
    )
    sizes = [len(blobs[e]) for e in (10, 20, 30)]
    assert max(sizes) - min(sizes) < 32  # a few digits of the numbers in meta, no history


def test_resume_needs_the_history_and_checks_it():
    spec = make_spec(hyperparameters={"epochs": 6})
    blobs = {}
    full = fit(spec, checkpoint_every=3, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    with pytest.raises(ValueError, match="history"):
        fit(spec, resume_from=blobs[3])
    with pytest.raises(ValueError, match="epochs 1..3"):
        fit(spec, resume_from=blobs[3], history=full.history[:2])


def test_resume_from_a_version_1_checkpoint_with_its_history(monkeypatch):
    from services.trainer import checkpoint

    spec = make_spec(hyperparameters={"epochs": 6})
    blobs = {}
    full = fit(spec, checkpoint_every=3, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    ckpt = checkpoint.load_checkpoint(blobs[3])
    ckpt.meta["history"] = full.history[:3]
    with monkeypatch.context() as m:  # as version 1 wrote it: the history inside
        m.setattr(checkpoint, "VERSION", 1)
        blob = checkpoint.dump_checkpoint(ckpt)
    assert checkpoint.load_checkpoint(blob).meta["version"] == 1
    resumed = fit(spec, resume_from=blob)
    assert strip_seconds(resumed.history) == strip_seconds(full.history)


def test_a_checkpoint_holds_no_spec_and_no_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 2))
    dataset = {"name": "arrays", "X": X.tolist(), "y": (X[:, 0] * X[:, 1] > 0).astype(int).tolist()}
    spec = make_spec(
        dataset=dataset,
        architecture={"layers": [{"units": 2}]},
        hyperparameters={"epochs": 2, "early_stopping": None},
    )
    blobs = {}
    full = fit(spec, checkpoint_every=1, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    meta = checkpoint.load_checkpoint(blobs[1]).meta
    assert meta["version"] == 3 and "spec" not in meta and len(meta["spec_sha256"]) == 64
    assert len(json.dumps(dataset)) > 100_000 and len(blobs[1]) < 4_000  # the state only
    resumed = fit(spec, resume_from=blobs[1], history=full.history[:1])
    assert resumed.network.params_flat.tobytes() == full.network.params_flat.tobytes()
    # the name is a label: renamed, the spec is the same one
    assert fit({**spec, "name": "renamed"}, resume_from=blobs[1], history=full.history[:1])
    # another spec's checkpoint: other data, or other hyperparameters
    other_data = {**dataset, "y": [1 - v for v in dataset["y"]]}
    for other in (
        {**spec, "dataset": other_data},
        {**spec, "hyperparameters": {**spec["hyperparameters"], "learning_rate": 0.2}},
    ):
        with pytest.raises(ValueError, match="another spec"):
            fit(other, resume_from=blobs[1], history=full.history[:1])


def test_resume_from_a_version_2_checkpoint_with_its_spec(monkeypatch):
    spec = make_spec(hyperparameters={"epochs": 6})
    blobs = {}
    full = fit(spec, checkpoint_every=3, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    ckpt = checkpoint.load_checkpoint(blobs[3])
    del ckpt.meta["spec_sha256"]
    ckpt.meta["spec"] = spec  # as version 2 wrote it: the spec inside, no digest
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "VERSION", 2)
        blob = checkpoint.dump_checkpoint(ckpt)
    assert checkpoint.load_checkpoint(blob).meta["version"] == 2
    resumed = fit(spec, resume_from=blob, history=full.history[:3])
    assert strip_seconds(resumed.history) == strip_seconds(full.history)
    assert resumed.network.params_flat.tobytes() == full.network.params_flat.tobytes()
    # a version-3 checkpoint without its digest is not whole
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "VERSION", 3)
        with pytest.raises(ValueError, match="lacks spec_sha256"):
            checkpoint.load_checkpoint(checkpoint.dump_checkpoint(ckpt))


def test_checkpoint_is_not_a_pickle():
    blobs = []
    fit(
        make_spec(hyperparameters={"epochs": 2}),
        checkpoint_every=1,
        on_checkpoint=lambda e, b: blobs.append(b),
    )
    import io

    with np.load(io.BytesIO(blobs[0]), allow_pickle=False) as z:
        assert "params" in z.files and "meta" in z.files
    with pytest.raises(ValueError):
        fit(make_spec(), resume_from=b"garbage")


def test_a_damaged_checkpoint_is_a_value_error():
    blobs = []
    fit(
        make_spec(hyperparameters={"epochs": 2}),
        checkpoint_every=1,
        on_checkpoint=lambda e, b: blobs.append(b),
    )
    blob = blobs[0]
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    for bad in (b"", blob[: len(blob) // 2], blob[:-40], bytes(flipped), "text"):
        with pytest.raises(ValueError, match="checkpoint"):
            checkpoint.load_checkpoint(bad)  # type: ignore[arg-type]
    ckpt = checkpoint.load_checkpoint(blob)
    del ckpt.meta["rng"]  # a well-formed archive that is not a whole checkpoint
    with pytest.raises(ValueError, match="lacks rng"):
        checkpoint.load_checkpoint(checkpoint.dump_checkpoint(ckpt))


def test_reproducible_bit_for_bit_and_seed_matters():
    spec = make_spec(hyperparameters={"dropout": 0.3, "epochs": 4})
    a, b = fit(spec), fit(spec)
    assert strip_seconds(a.history) == strip_seconds(b.history)
    assert a.network.params_flat.tobytes() == b.network.params_flat.tobytes()
    c = fit(make_spec(hyperparameters={"dropout": 0.3, "epochs": 4, "seed": 1}))
    assert c.network.params_flat.tobytes() != a.network.params_flat.tobytes()


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ({"name": "constant"}, lambda e: 0.1),
        ({"name": "step", "step_size": 3, "gamma": 0.5}, lambda e: 0.1 * 0.5 ** (e // 3)),
        ({"name": "exponential", "gamma": 0.9}, lambda e: 0.1 * 0.9**e),
        (
            {"name": "cosine", "min_lr": 0.01},
            lambda e: 0.01 + 0.09 * (1 + math.cos(math.pi * e / 8)) / 2,
        ),
        ({"name": "constant", "warmup_epochs": 4}, lambda e: 0.1 * min(e + 1, 4) / 4),
        (
            {"name": "step", "step_size": 2, "gamma": 0.1, "warmup_epochs": 2},
            lambda e: 0.1 * (e + 1) / 2 if e < 2 else 0.1 * 0.1 ** ((e - 2) // 2),
        ),
        (
            {"name": "exponential", "gamma": 0.5, "warmup_epochs": 3},
            lambda e: 0.1 * (e + 1) / 3 if e < 3 else 0.1 * 0.5 ** (e - 3),
        ),
        (
            {"name": "cosine", "warmup_epochs": 2},
            lambda e: (
                0.1 * (e + 1) / 2 if e < 2 else 0.1 * (1 + math.cos(math.pi * (e - 2) / 6)) / 2
            ),
        ),
        (
            {"name": "cosine", "t_max": 4},
            lambda e: 0.1 * (1 + math.cos(math.pi * min(e, 4) / 4)) / 2,
        ),
    ],
)
def test_schedules_give_each_epoch_its_rate(schedule, expected):
    result = fit(
        make_spec(hyperparameters={"epochs": 8, "lr_schedule": schedule, "learning_rate": 0.1})
    )
    rates = [r["learning_rate"] for r in result.history]
    # a handful of float64 operations, ordered differently from the expected formula
    assert rates == pytest.approx([expected(e) for e in range(8)], rel=rounding_rtol(np.float64, 8))
    spec = parse_spec(make_spec(hyperparameters={"lr_schedule": schedule}))
    assert learning_rate(0.1, 0, spec.hyperparameters.lr_schedule, 8) == pytest.approx(expected(0))


def test_l2_dropout_clipping_and_float64_run():
    base = {"epochs": 3, "dtype": "float64"}
    plain = fit(make_spec(hyperparameters=base))
    assert plain.network.dtype == np.float64
    l2 = fit(make_spec(hyperparameters={**base, "l2": 0.5}))
    assert l2.history[-1]["weight_norm"][0] < plain.history[-1]["weight_norm"][0]
    clipped = fit(make_spec(hyperparameters={**base, "gradient_clip_norm": 1e-3}))
    moved = np.abs(
        clipped.network.params_flat
        - build_network(
            make_spec(hyperparameters=base), load_dataset(make_spec()["dataset"])
        ).params_flat
    ).sum()
    assert moved < np.abs(plain.network.params_flat).sum()
    dropped = fit(make_spec(hyperparameters={**base, "dropout": 0.5}))
    assert dropped.status == "completed"
    assert strip_seconds(dropped.history) != strip_seconds(plain.history)


def test_clip_by_global_norm_matches_torch_rule():
    from services.trainer.optimizers import clip_by_global_norm

    g = np.array([3.0, 4.0])
    assert clip_by_global_norm(g, 1.0) == 5.0
    assert np.allclose(g, np.array([3.0, 4.0]) / (5.0 + 1e-6))
    h = np.array([0.3, 0.4])
    clip_by_global_norm(h, 1.0)
    assert np.array_equal(h, [0.3, 0.4])


def test_fit_with_data_and_network_given():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    data = dataset_from_arrays(X[:40], y[:40], X[40:], y[40:])
    spec = make_spec(
        dataset={"name": "digits"},  # re-inferred for the data given
        hyperparameters={"epochs": 5},
    )
    result = fit(spec, data=data)
    assert result.network.sizes == [3, 16, 1] and result.network.loss.name == "binary_cross_entropy"
    again = fit(spec, data=data, network=result.network)
    assert again.network is result.network


def test_no_validation_split():
    result = fit(
        make_spec(
            dataset={"name": "xor", "n_samples": 4, "noise": 0.0, "validation_split": 0.0},
            architecture={"layers": [{"units": 8, "activation": "tanh"}]},
            hyperparameters={
                "epochs": 300,
                "batch_size": None,
                "learning_rate": 0.5,
                "optimizer": "sgd",
                "momentum": 0.9,
            },
        )
    )
    last = result.history[-1]
    assert last["val_loss"] is None and last["val_accuracy"] is None
    assert last["train_accuracy"] == 1.0  # the XOR truth table is learnt
    assert result.best_epoch is not None


def test_more_classes_than_the_network_has_outputs_is_named():
    spec = make_spec(dataset={"name": "iris"}, hyperparameters={"epochs": 1})
    net = fit(spec).network  # 3 outputs
    X = np.zeros((10, 4))
    assert fit(spec, data=dataset_from_arrays(X, np.array([0, 2] * 5)), network=net)
    with pytest.raises(ValueError, match="5 classes but the network 3 outputs"):
        fit(spec, data=dataset_from_arrays(X, np.arange(10) % 5), network=net)


def test_an_existing_network_trains_on_a_subset_of_its_classes():
    """{1, 2} of iris's three classes: encoded {0, 1} by dataset_from_arrays, and
    decoded back to the network's own indices by fit."""
    spec = make_spec(
        dataset={"name": "iris"},
        hyperparameters={"epochs": 30, "optimizer": "adam", "learning_rate": 0.05},
    )
    first = fit(spec)
    data = first.data
    assert data is not None
    keep_train, keep_val = data.y_train > 0, data.y_val > 0
    subset = dataset_from_arrays(
        data.X_train[keep_train],
        data.y_train[keep_train],
        data.X_val[keep_val],
        data.y_val[keep_val],
    )
    assert subset.classes == [1, 2]
    before = first.network.evaluate(subset.X_val, data.y_val[keep_val], data.y_val[keep_val])[1]
    more = fit(
        {**spec, "hyperparameters": {**spec["hyperparameters"], "epochs": 1}},
        data=subset,
        network=first.network,
    )
    assert more.history[0]["val_accuracy"] >= before - 0.1 > 0.5


def test_early_stopping_on_a_validation_metric_needs_validation_rows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    data = dataset_from_arrays(X, (X[:, 0] > 0).astype(int))  # no validation set
    with pytest.raises(SpecError) as err:
        fit(make_spec(hyperparameters={"early_stopping": {"patience": 2}}), data=data)
    assert err.value.loc == "hyperparameters.early_stopping.metric"


def _dead_fractions(net, X) -> list:
    """Per layer, the share of ReLU units that fire on no row of ``X`` (None for the head)."""
    X, dead = net.as_rows(X)[0], []
    for layer in net.layers[:-1]:
        X = layer.activation.forward(X @ layer.params["W"] + layer.params["b"])
        dead.append(float(1.0 - (X > 0).any(axis=0).mean()))
    return dead + [None]


def test_regression_dead_units_are_counted_on_the_training_rows():
    """Not on the validation rows (3 here), unless "running" asks to save the pass."""
    spec = make_spec(
        dataset={"name": "sine", "n_samples": 60, "validation_split": 0.05, "seed": 1},
        architecture={"layers": [{"units": 16}, {"units": 16}]},
        hyperparameters={"epochs": 3, "optimizer": "adam", "learning_rate": 0.01},
    )
    result = fit(spec)
    data, net = result.data, result.network
    assert data is not None and len(data.X_val) == 3
    on_train = _dead_fractions(net, data.X_train)
    assert on_train != _dead_fractions(net, data.X_val)  # the two really differ here
    assert result.history[-1]["dead_relu_fraction"] == pytest.approx(on_train)
    spec["hyperparameters"]["train_metrics"] = "running"
    running = fit(spec)
    assert running.history[-1]["train_loss"] == result.history[-1]["train_loss"]
    assert running.history[-1]["dead_relu_fraction"] == pytest.approx(
        _dead_fractions(running.network, data.X_val)
    )


def test_predict_takes_one_sample_as_a_vector():
    result = fit(make_spec(hyperparameters={"epochs": 2}))
    data = result.data
    assert data is not None and data.feature_std is not None
    rows = data.X_val[:3]
    raw = rows * data.feature_std + data.feature_mean
    assert result.predict(raw[0]) == result.predict(raw)[0]
    # One row goes through GEMV, three through GEMM: another summation order, whose
    # last bits differ on some BLAS kernels (SkylakeX's), so equal to rounding.
    one, batch = result.network.predict(rows[1]), result.network.predict(rows)[1]
    assert one.shape == batch.shape
    assert_close(one, batch, np.float32, network_reduction(result.network.sizes))
    with pytest.raises(ValueError, match="2 features"):
        result.predict([0.1, 0.2, 0.3])


def test_running_train_metrics_mode():
    result = fit(make_spec(hyperparameters={"epochs": 3, "train_metrics": "running"}))
    assert all(0 <= r["train_accuracy"] <= 1 for r in result.history)
    assert all(r["dead_relu_fraction"][0] is not None for r in result.history)


def test_per_batch_gather_for_big_sets_gives_the_same_numbers(monkeypatch):
    import services.trainer.train as train_module

    spec = make_spec(hyperparameters={"epochs": 3, "batch_size": 24, "dropout": 0.1})
    per_epoch = fit(spec)
    monkeypatch.setattr(train_module, "GATHER_PER_EPOCH_BYTES", 0)
    per_batch = fit(spec)
    assert strip_seconds(per_batch.history) == strip_seconds(per_epoch.history)
    assert per_batch.network.params_flat.tobytes() == per_epoch.network.params_flat.tobytes()


def test_result_predict_takes_raw_inputs_and_returns_labels_or_targets():
    table = [[0, 0], [0, 1], [1, 0], [1, 1]]
    result = fit(
        {
            "dataset": {
                "name": "arrays",
                "X": table * 5,
                "y": ["no", "yes", "yes", "no"] * 5,
                "validation_split": 0,
            },
            "architecture": {"layers": [{"units": 8, "activation": "tanh"}]},
            "hyperparameters": {
                "learning_rate": 0.3,
                "optimizer": "adam",
                "epochs": 200,
                "batch_size": None,
            },
        }
    )
    assert result.predict(table).tolist() == ["no", "yes", "yes", "no"]
    X = np.linspace(0, 3, 80)[:, None]
    reg = fit(
        {
            "dataset": {"name": "arrays", "X": X, "y": 100 + 10 * X[:, 0]},
            "architecture": {"layers": [{"units": 8, "activation": "tanh"}]},
            "hyperparameters": {"learning_rate": 0.01, "optimizer": "adam", "epochs": 100},
        }
    )
    assert reg.predict([[1.5]]) == pytest.approx([115.0], abs=1.0)


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer", "diabetes"])  # CE, BCE, MSE
def test_sgd_folding_the_learning_rate_into_the_loss_gradient_changes_no_number(dataset):
    # Plain SGD without L2 or clipping takes lr * g from the loss (one
    # subtraction per step); a clipping bound that never bites turns the
    # folding off and must give the same run to rounding.
    spec = make_spec(
        dataset={"name": dataset, "validation_split": 0.2},
        architecture={"layers": [{"units": 32}, {"units": 16}]},
        hyperparameters={
            "epochs": 4,
            "batch_size": 50,
            "dtype": "float64",
            "learning_rate": 0.01,
            "lr_schedule": {"name": "cosine", "warmup_epochs": 1},
        },
    )
    folded = fit(spec)
    plain = fit(
        make_spec(
            **{**spec, "hyperparameters": {**spec["hyperparameters"], "gradient_clip_norm": 1e12}}
        )
    )
    # lr * g rounds differently from g then lr *: each update may differ in its last
    # bits, through a chain of fan-in and batch sums, and the updates compound.
    assert folded.data is not None
    n_train = len(folded.data.X_train)
    reduction = network_reduction(folded.network.sizes) + 50
    steps = 4 * math.ceil(n_train / 50)
    rel = rounding_rtol(np.float64, reduction, steps)
    for a, b in zip(folded.history, plain.history, strict=True):
        assert a.keys() == b.keys()
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=rel), key
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=rel)
    params = folded.network.params_flat, plain.network.params_flat
    assert_close(*params, np.float64, reduction, steps)


def test_checkpoint_arrays_are_in_the_plain_layer_order():
    # The network keeps [W_1.., W_0, b_0, b_1..] (W_0 and b_0 one block for the
    # folded bias); checkpoints, and what the service stores, keep
    # [W_0, ..., W_L, b_0, ..., b_L] whatever the in-memory layout.
    from services.trainer import checkpoint

    spec = make_spec(
        architecture={"layers": [{"units": 8}, {"units": 4}]},
        hyperparameters={"epochs": 2, "optimizer": "adam", "early_stopping": {"patience": 5}},
    )
    blobs = {}
    result = fit(spec, checkpoint_every=1, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    ckpt = checkpoint.load_checkpoint(blobs[1])
    net = result.network
    resumed = fit(
        {**spec, "hyperparameters": {**spec["hyperparameters"], "epochs": 1}},
        resume_from=blobs[1],
        history=result.history[:1],
    )  # already done: no step
    layers = resumed.network.layers
    plain = np.concatenate([L.params[k].ravel() for k in ("W", "b") for L in layers])
    assert np.array_equal(ckpt.params, plain)
    assert np.array_equal(net.first_block[:-1], net.layers[0].params["W"])
    assert np.array_equal(net.first_block[-1], net.layers[0].params["b"])
    # optimizer moments come back where they belong: the resumed run matches
    full = fit(spec)
    again = fit(spec, resume_from=blobs[1], history=result.history[:1])
    assert again.network.params_flat.tobytes() == full.network.params_flat.tobytes()
    assert set(ckpt.optimizer_arrays) == {"exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_losses_taken_at_the_epochs_end_equal_the_per_batch_ones(dtype):
    # fit takes cross-entropy's logarithms once per epoch (CrossEntropy.gradient);
    # a subclass goes through forward_backward batch by batch: the same records.
    from services.trainer.losses import CrossEntropy

    class PerBatch(CrossEntropy):
        pass

    spec = make_spec(
        dataset={"name": "digits", "validation_split": 0.2},
        architecture={"layers": [{"units": 24}]},
        hyperparameters={
            "epochs": 3,
            "batch_size": 100,
            "dtype": dtype,
            "train_metrics": "running",
        },
    )
    data = load_dataset(parse_spec(spec).dataset)
    net = build_network(parse_spec(spec), data)
    other = net.copy()
    other.loss = PerBatch()
    deferred, per_batch = fit(spec, data=data, network=net), fit(spec, data=data, network=other)
    # the same outputs, their log-sum-exp summed per epoch or per batch: the sums of
    # 10 classes and of a 100-row batch, in another order
    rel = rounding_rtol(dtype, 10 + 100)
    for a, b in zip(deferred.history, per_batch.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rel)
        assert a["val_loss"] == b["val_loss"] and a["train_accuracy"] == b["train_accuracy"]


def test_a_checkpoint_of_an_earlier_release_resumes_to_the_same_run():
    # Written by commit d0ca09a, whose network kept its flat parameters in the
    # order [W_0, ..., W_L, b_0, ..., b_L] that checkpoints still use; the JSON
    # holds that release's uninterrupted run.
    from pathlib import Path

    here = Path(__file__).parent / "data"
    blob = (here / "checkpoint_epoch2_d0ca09a.npz").read_bytes()
    old = json.loads((here / "checkpoint_epoch2_d0ca09a.json").read_text())
    resumed = fit(old["spec"], resume_from=blob, history=old["history"][:2])
    # Written on another machine, maybe by another BLAS kernel: equal to the rounding
    # of the two epochs trained since (float64, moons 2-8-4-1, 90 rows in batches of 16).
    reduction = network_reduction(resumed.network.sizes) + 16
    steps = 2 * math.ceil(90 / 16)
    rel = rounding_rtol(np.float64, reduction, steps)
    for new, then in zip(resumed.history, old["history"], strict=True):
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert new[key] == pytest.approx(then[key], rel=rel), (new["epoch"], key)
    for layer, W, b in zip(resumed.network.layers, old["final_W"], old["final_b"], strict=True):
        assert_close(layer.params["W"], W, np.float64, reduction, steps)
        assert_close(layer.params["b"], b, np.float64, reduction, steps)
