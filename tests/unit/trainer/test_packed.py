"""``fit_packed``: k trials trained as one stack give each trial its solo ``fit``'s numbers,
bit for bit (records but ``seconds``, status, best epoch, diagnosis, weights, checkpoints),
whatever stops a trial; checkpoints resume a trial alone or a pack."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from services.trainer import build_network, fit, load_dataset, network, packed_stack
from services.trainer.checkpoint import load_checkpoint
from services.trainer.packed import (
    PackError,
    check_packable,
    fit_packed,
    pack_key,
    pack_size,
    packing_pays,
)

from .conftest import strip_seconds

BASE = {
    "dataset": {"name": "moons", "n_samples": 300, "seed": 0},
    "architecture": {"layers": [{"units": 16}, {"units": 8}], "output_activation": "softmax"},
    "hyperparameters": {"learning_rate": 0.1, "epochs": 6, "batch_size": 32, "dtype": "float64"},
}


def spec(base=BASE, **hp) -> dict:
    s = copy.deepcopy(base)
    s["hyperparameters"].update(hp)
    return s


def assert_same(solo, packed) -> None:
    """Everything a trial reports, bit for bit (the records' wall time aside)."""
    assert packed.status == solo.status
    assert strip_seconds(packed.history) == strip_seconds(solo.history)
    assert packed.best_epoch == solo.best_epoch and packed.best_metrics == solo.best_metrics
    assert packed.diverged_epoch == solo.diverged_epoch
    assert packed.diagnosis == solo.diagnosis
    assert packed.network.params_flat.tobytes() == solo.network.params_flat.tobytes()
    assert packed.train_metrics == solo.train_metrics


def check(specs, **kwargs) -> list:
    results = fit_packed(specs, **kwargs)
    assert len(results) == len(specs)
    for s, packed in zip(specs, results, strict=True):
        assert_same(fit(s), packed)
    return results


# --- the kernels: stacked calls equal the solo calls slice by slice ----------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_products_equal_the_solo_products_slice_by_slice(dtype):
    rng = np.random.default_rng(0)
    k, n, d_in, d_out = 4, 32, 65, 24
    A = rng.standard_normal((k, n, d_in)).astype(dtype)
    W = rng.standard_normal((k, d_in, d_out)).astype(dtype)
    d = rng.standard_normal((k, n, d_out)).astype(dtype)
    ones = np.ones(n, dtype)
    G = np.empty((k, 3 * d_out), dtype)  # bias gradients in strided rows, as in a pack
    np.matmul(ones, d, out=G[:, :d_out])
    ZT = np.matmul(W.transpose(0, 2, 1), A.transpose(0, 2, 1))  # the output layer's O^T
    dO = d.transpose(0, 2, 1).copy().transpose(0, 2, 1)  # F-ordered slices, like dO
    for j in range(k):
        assert (ZT[j] == np.dot(W[j].T, A[j].T)).all()
        assert (np.matmul(dO, W.transpose(0, 2, 1))[j] == np.dot(dO[j], W[j].T)).all()
        assert (np.matmul(A.transpose(0, 2, 1), dO)[j] == np.dot(A[j].T, dO[j])).all()
        assert (np.matmul(A, W)[j] == np.dot(A[j], W[j])).all()
        assert (np.matmul(A.transpose(0, 2, 1), d)[j] == np.dot(A[j].T, d[j])).all()
        assert (np.matmul(d, W.transpose(0, 2, 1))[j] == np.dot(d[j], W[j].T)).all()
        assert (G[j, :d_out] == np.dot(ones, d[j])).all()
        flat = A[j].reshape(-1)
        assert np.matmul(A.reshape(k, 1, -1), A.reshape(k, -1, 1))[j, 0, 0] == np.vdot(flat, flat)


# --- agreement over the hyperparameters ------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_learning_rate_sweep_equals_its_solo_runs(dtype):
    check([spec(learning_rate=lr, dtype=dtype, seed=i) for i, lr in enumerate((0.01, 0.1, 0.5))])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sgd_variants_l2_clipping_dropout_and_schedules_in_one_pack(dtype):
    """Trials of different code paths (momentum, Nesterov, L2, clipping) share a pack
    in segments; dropout rates and schedules differ freely."""
    check(
        [
            spec(learning_rate=0.1, momentum=0.9, nesterov=True, dtype=dtype),
            spec(learning_rate=0.05, momentum=0.5, dampening=0.1, dtype=dtype, seed=1),
            spec(learning_rate=0.2, dtype=dtype, lr_schedule={"name": "cosine", "min_lr": 0.0}),
            spec(learning_rate=0.1, l2=1e-3, dtype=dtype, dropout=0.3, seed=2),
            spec(learning_rate=0.3, gradient_clip_norm=0.5, seed=3, dtype=dtype),
            spec(
                learning_rate=0.1,
                dropout=0.2,
                dtype=dtype,
                lr_schedule={"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 2},
            ),
        ]
    )


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_adaptive_optimizers_with_their_constants(optimizer):
    check(
        [
            spec(optimizer=optimizer, learning_rate=0.01),
            spec(optimizer=optimizer, learning_rate=0.003, seed=1, eps=1e-6, l2=1e-4),
            spec(optimizer=optimizer, learning_rate=0.01, betas=[0.8, 0.99], alpha=0.9),
            spec(optimizer=optimizer, learning_rate=0.01, momentum=0.5, gradient_clip_norm=1.0),
        ]
        + (
            [spec(optimizer="adamw", learning_rate=0.01, weight_decay=0.0)]
            if optimizer == "adamw"
            else []
        )
    )


def test_regression_and_binary_heads():
    sine = {
        "dataset": {"name": "sine", "n_samples": 200},
        "architecture": {"layers": [{"units": 16, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.05, "epochs": 4, "batch_size": 16},
    }
    check([spec(sine, learning_rate=lr, seed=i) for i, lr in enumerate((0.01, 0.05))])
    binary = spec(BASE)
    del binary["architecture"]["output_activation"]  # moons: one sigmoid logit
    check([spec(binary, learning_rate=lr, train_metrics="running") for lr in (0.05, 0.5)])


# --- trials that leave the pack --------------------------------------------------------


@pytest.mark.parametrize("leave", ["drop", "mask"])
def test_divergence_early_stopping_and_a_stopping_callback_leave_without_disturbing(leave):
    base = spec(
        {
            "dataset": {"name": "sine", "n_samples": 200},
            "architecture": {"layers": [{"units": 32}, {"units": 32}]},
            "hyperparameters": {"learning_rate": 0.01, "epochs": 12, "batch_size": 16},
        }
    )
    specs = [
        spec(base, learning_rate=0.01, momentum=0.9),
        spec(base, learning_rate=10.0, momentum=0.9, seed=1),  # diverges in a batch
        spec(base, learning_rate=0.05, early_stopping={"metric": "train_loss", "patience": 1}),
        spec(base, learning_rate=0.02, momentum=0.9, dropout=0.2, seed=4),  # stopped at 3
        spec(base, learning_rate=0.01, seed=5),
    ]
    seen: list[list[int]] = [[] for _ in specs]

    def watcher(i):
        def on_epoch(record):
            seen[i].append(record["epoch"])
            return i == 3 and record["epoch"] == 3

        return on_epoch

    results = fit_packed(specs, on_epoch=[watcher(i) for i in range(len(specs))], leave=leave)
    statuses = [r.status for r in results]
    assert statuses[1] == "diverged" and statuses[3] == "stopped"
    assert statuses[2] == "early_stopped" and statuses[0] == statuses[4] == "completed"
    assert seen[3] == [1, 2, 3] and seen[1] == [r["epoch"] for r in results[1].history]
    for i, (s, packed) in enumerate(zip(specs, results, strict=True)):
        solo = fit(s, on_epoch=(lambda r: r["epoch"] == 3) if i == 3 else None)
        assert_same(solo, packed)


def test_divergence_in_cross_entropy_mid_epoch():
    digits = {
        "dataset": {"name": "digits"},
        "architecture": {"layers": [{"units": 32}, {"units": 32}]},
        "hyperparameters": {"learning_rate": 1e6, "epochs": 3, "batch_size": 64},
    }
    results = check([spec(digits, learning_rate=lr) for lr in (1e6, 0.05)])
    assert results[0].status == "diverged" and results[1].status == "completed"


# --- checkpoints and resume ------------------------------------------------------------


def _collector(store, i):
    return lambda epoch, blob: store.setdefault(i, {}).__setitem__(epoch, blob)


def test_checkpoints_resume_a_trial_alone_and_the_pack():
    specs = [
        spec(learning_rate=0.1, momentum=0.9, dropout=0.2, epochs=7),
        spec(optimizer="sgd", learning_rate=0.3, epochs=7, seed=1),
        spec(
            learning_rate=0.05,
            momentum=0.9,
            nesterov=True,
            l2=1e-3,
            epochs=7,
            seed=2,
            early_stopping={"metric": "val_loss", "patience": 50},
        ),
    ]
    store: dict = {}
    full = fit_packed(
        specs, checkpoint_every=3, on_checkpoint=[_collector(store, i) for i in range(3)]
    )
    assert all(sorted(store[i]) == [3, 6] for i in range(3))
    for i, s in enumerate(specs):  # a trial of the pack resumes alone
        alone = fit(s, resume_from=store[i][3], history=full[i].history[:3])
        assert_same(alone, full[i])
    resumed = fit_packed(  # the pack resumes from its trials' checkpoints
        specs,
        resume_from=[store[i][6] for i in range(3)],
        history=[full[i].history[:6] for i in range(3)],
    )
    for a, b in zip(resumed, full, strict=True):
        assert_same(a, b)
    solo_blobs: dict = {}  # and a solo run's checkpoint resumes in a pack
    fit(specs[0], checkpoint_every=3, on_checkpoint=lambda e, b: solo_blobs.__setitem__(e, b))
    packed_ckpt, solo_ckpt = load_checkpoint(store[0][3]), load_checkpoint(solo_blobs[3])
    assert {k: v for k, v in packed_ckpt.meta.items() if k != "seconds"} == {
        k: v for k, v in solo_ckpt.meta.items() if k != "seconds"
    }
    assert packed_ckpt.params.tobytes() == solo_ckpt.params.tobytes()
    assert packed_ckpt.best_params is None and solo_ckpt.best_params is None
    assert (
        sorted(packed_ckpt.optimizer_arrays)
        == sorted(solo_ckpt.optimizer_arrays)
        == ["momentum_buffer"]
    )
    for key, value in solo_ckpt.optimizer_arrays.items():
        assert packed_ckpt.optimizer_arrays[key].tobytes() == value.tobytes()
    again = fit_packed(specs[:1], resume_from=[solo_blobs[3]], history=[full[0].history[:3]])
    assert_same(again[0], full[0])


def test_an_interrupted_pack_resumes_equal_to_the_undisturbed_one():
    specs = [spec(learning_rate=lr, momentum=0.9, seed=i) for i, lr in enumerate((0.05, 0.2))]
    full = fit_packed(specs)
    store: dict = {}
    calls = iter(range(10**6))
    cut = fit_packed(
        specs,
        checkpoint_every=2,
        on_checkpoint=[_collector(store, i) for i in range(2)],
        interrupt=lambda: next(calls) >= 3 * 8 + 2,  # 8 batches an epoch: in epoch 4
    )
    assert [r.status for r in cut] == ["stopped", "stopped"]
    assert [len(r.history) for r in cut] == [3, 3]
    resumed = fit_packed(
        specs, resume_from=[store[i][2] for i in range(2)], history=[c.history[:2] for c in cut]
    )
    for a, b in zip(resumed, full, strict=True):
        assert_same(a, b)


def test_a_pack_resumes_only_checkpoints_of_one_epoch():
    specs = [spec(learning_rate=lr) for lr in (0.05, 0.2)]
    store: dict = {}
    full = fit_packed(
        specs, checkpoint_every=2, on_checkpoint=[_collector(store, i) for i in range(2)]
    )
    with pytest.raises(PackError, match="same epoch"):
        fit_packed(
            specs,
            resume_from=[store[0][2], store[1][4]],
            history=[full[0].history[:2], full[1].history[:4]],
        )


# --- what may share a pack ---------------------------------------------------------------


def test_pack_key_ignores_the_scalars_a_pack_may_differ_in():
    a = spec(learning_rate=0.1)
    b = spec(
        learning_rate=0.3,
        momentum=0.9,
        nesterov=True,
        l2=1e-3,
        dropout=0.2,
        seed=7,
        gradient_clip_norm=1.0,
        early_stopping={"patience": 2},
        lr_schedule={"name": "cosine"},
    )
    assert pack_key(a) == pack_key(b)
    for other in (
        spec(batch_size=64),
        spec(epochs=7),
        spec(optimizer="adam"),
        spec(dtype="float32"),
    ):
        assert pack_key(other) != pack_key(a)
    with pytest.raises(PackError, match="hyperparameters.batch_size"):
        check_packable([a, spec(batch_size=64)])
    wider = copy.deepcopy(a)
    wider["architecture"]["layers"][0]["units"] = 32
    with pytest.raises(PackError, match="architecture.layers"):
        fit_packed([a, wider])
    with pytest.raises(PackError, match="one entry per spec"):
        fit_packed([a, b], on_epoch=[None])


def test_packing_pays_where_the_benchmark_measured_it_faster():
    assert packing_pays([2, 64, 64, 2], 32, 8) and packing_pays([2, 64, 2], 32, 2)
    assert not packing_pays([2, 64, 64, 2], 32, 1)  # one trial is no pack
    assert not packing_pays([784, 256, 10], 128, 8)  # GEMM-bound: the stack only costs
    assert not packing_pays([64, 256, 256, 10], 64, 16)
    assert packing_pays([64, 128, 10], 64, 4) and not packing_pays([64, 128, 10], 64, 2)
    assert not packing_pays([2, 64, 2], None, 8)  # the whole set per batch
    assert pack_size([2, 64, 64, 2], 32, 40) == 16 and pack_size([2, 64, 64, 2], 32, 5) == 5
    assert pack_size([784, 256, 10], 128, 8) == 1


def test_batches_gathered_one_by_one_give_the_same_numbers(monkeypatch):
    """A stack too big to gather per epoch is gathered batch by batch (as solo ``fit``
    does for big sets): the same batches."""
    monkeypatch.setattr(packed_stack, "GATHER_PER_EPOCH_BYTES", 0)
    check([spec(learning_rate=lr, seed=i, dropout=0.1) for i, lr in enumerate((0.05, 0.2))])


BIG = {  # 1,600 rows: a training set larger than the 1,024-row after-epoch sample
    "dataset": {"name": "spirals", "n_samples": 1600, "seed": 1},
    "architecture": {"layers": [{"units": 16}, {"units": 12}], "output_activation": "softmax"},
    "hyperparameters": {"learning_rate": 0.1, "epochs": 3, "batch_size": 64, "dtype": "float32"},
}


def test_the_after_epoch_measurements_of_a_pack_equal_each_trials_own():
    """Each trial's own sample of training rows (drawn from its seed), its live units,
    the running accuracy, a sigmoid head's threshold, a regression with ReLUs."""
    seeds = [spec(BIG, learning_rate=lr, seed=i) for i, lr in enumerate((0.03, 0.1, 0.3))]
    check(seeds)
    check(
        [
            spec(BIG, learning_rate=lr, seed=i, train_metrics="running")
            for i, lr in ((0, 0.1), (5, 0.3))
        ]
    )
    binary = spec(BASE, dtype="float32")
    del binary["architecture"]["output_activation"]  # moons: one sigmoid logit
    check([spec(binary, learning_rate=lr, seed=i) for i, lr in enumerate((0.05, 0.5))])
    relu_regression = {
        "dataset": {"name": "sine", "n_samples": 200},
        "architecture": {"layers": [{"units": 16, "activation": "relu"}]},
        "hyperparameters": {"learning_rate": 0.05, "epochs": 3, "batch_size": 16},
    }
    check([spec(relu_regression, learning_rate=lr, seed=i) for i, lr in enumerate((0.01, 0.1))])


def test_sets_larger_than_an_evaluation_chunk(monkeypatch):
    """Sets evaluated in several chunks (as ``evaluate`` splits a set of more than
    ``EVAL_CHUNK`` rows): the same numbers."""
    monkeypatch.setattr(network, "EVAL_CHUNK", 100)
    check([spec(BIG, learning_rate=lr, seed=i) for i, lr in enumerate((0.05, 0.2))])


def test_an_interrupt_after_a_divergence_in_the_same_epoch_records_the_divergence():
    sine = {
        "dataset": {"name": "sine", "n_samples": 200},
        "architecture": {"layers": [{"units": 32}, {"units": 32}]},
        "hyperparameters": {"learning_rate": 0.01, "epochs": 6, "batch_size": 16},
    }
    specs = [spec(sine, learning_rate=10.0), spec(sine, learning_rate=0.01)]
    alone = fit(specs[0])
    assert alone.status == "diverged"
    n_batches = 10  # 160 training rows / 16
    stop_at = (alone.diverged_epoch - 1) * n_batches + n_batches - 1  # its epoch's last batch
    calls = iter(range(10**6))
    results = fit_packed(specs, interrupt=lambda: next(calls) >= stop_at)
    assert_same(alone, results[0])
    assert results[1].status == "stopped" and len(results[1].history) == alone.diverged_epoch - 1


def test_given_networks_and_data_train_in_place_as_solo():
    data = load_dataset(BASE["dataset"])
    specs = [spec(learning_rate=lr, seed=i, epochs=3) for i, lr in enumerate((0.05, 0.2))]
    nets = [build_network(s, data) for s in specs]
    solo = [fit(s, data=data, network=build_network(s, data)) for s in specs]
    results = fit_packed(specs, data=BASE["dataset"], networks=nets)
    for s, r, n in zip(solo, results, nets, strict=True):
        assert_same(s, r)
        assert r.network is n  # trained in place, as fit does


def test_a_trial_that_blows_up_at_the_end_of_an_epoch_measures_quietly_as_solo():
    """Its evaluation overflows (inf weights after the epoch's last update): no
    RuntimeWarning (pytest turns them into errors), the solo record."""
    blobs = {
        "dataset": {"name": "blobs", "n_samples": 240, "centers": 4},
        "architecture": {"layers": [{"units": 16}] * 3},
        "hyperparameters": {"epochs": 3, "batch_size": 16, "train_metrics": "running"},
    }
    check(
        [
            spec(blobs, learning_rate=0.479, seed=21, momentum=0.9),
            spec(blobs, learning_rate=5.375, seed=17, early_stopping={"patience": 2}),
        ]
    )
