"""The training pass against a plain, allocation-happy reference implementation.

The two compute the same sums in other orders: they are compared to rounding
(tests/numerics.py), never bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.trainer.layers import Dense
from services.trainer.losses import get_loss
from services.trainer.network import Network
from tests.numerics import assert_close, network_reduction, rounding_rtol


def _network(acts, dropout, loss, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [5, 7, 6, 3]
    layers = []
    for i, act in enumerate(acts):
        layer = Dense(
            sizes[i], sizes[i + 1], act, dropout if i < len(acts) - 1 else 0.0, np.float64
        )
        layer.params["W"][...] = rng.standard_normal(layer.params["W"].shape)
        layer.params["b"][...] = rng.standard_normal(layer.params["b"].shape)
        layers.append(layer)
    return Network(
        layers,
        get_loss(loss),
        "softmax" if loss == "cross_entropy" else "linear",
        "classification" if loss == "cross_entropy" else "regression",
    )


def _reference(net, X, Y, rng):
    """Forward and backward written out with fresh arrays and no tricks."""
    inputs, cache, A = [], [], X
    for layer in net.layers:
        Z = A @ layer.params["W"] + layer.params["b"]
        G = layer.activation.forward(Z.copy())
        keep = None
        if layer.dropout > 0:
            noise = rng.random(Z.shape)
            keep = (noise >= layer.dropout) / (1 - layer.dropout)
        inputs.append(A)
        cache.append((Z, G, keep))
        A = G * keep if keep is not None else G
    O = A
    d = np.empty_like(O)
    loss = net.loss.forward_backward(O.copy(), Y, d)
    grads = []
    for layer, A_in, (Z, G, keep) in reversed(list(zip(net.layers, inputs, cache, strict=True))):
        if keep is not None:
            d = d * keep
        d = layer.activation.backward(d.copy(), Z, G)
        grads.append((A_in.T @ d, d.sum(axis=0)))
        d = d @ layer.params["W"].T
    return O, loss, grads[::-1]


@pytest.mark.parametrize(
    ("acts", "dropout", "loss"),
    [
        (["relu", "relu", "linear"], 0.0, "cross_entropy"),
        (["relu", "tanh", "linear"], 0.3, "cross_entropy"),
        (["leaky_relu", "sigmoid", "tanh"], 0.2, "mse"),
        (["linear", "relu", "relu"], 0.5, "mse"),
    ],
)
def test_training_pass_equals_the_reference(acts, dropout, loss):
    net = _network(acts, dropout, loss)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 5))
    Y = (
        net.encode_targets(rng.integers(0, 3, 9))
        if loss == "cross_entropy"
        else rng.standard_normal((9, 3))
    )
    O_ref, loss_ref, grads_ref = _reference(net, X, Y, np.random.default_rng(7))
    # Another order of the same sums (the bias folded into the first product, outputs
    # taken transposed): equal to float64 rounding over the longest chain of sums,
    # forward through every fan-in, the loss over the outputs and the 9 rows, and
    # back through every fan-out.
    forward = network_reduction(net.sizes)
    chain = forward + sum(net.sizes[1:]) + len(X)
    for _ in range(2):  # the second step reuses every buffer
        O = net.forward(X, training=True, rng=np.random.default_rng(7))
        assert O.flags.f_contiguous  # the output layer's product is taken transposed
        assert_close(O, O_ref, np.float64, forward)
        dO = np.empty_like(O)
        loss = net.loss.forward_backward(O, Y, dO)
        assert loss == pytest.approx(loss_ref, rel=rounding_rtol(np.float64, chain))
        net.backward(dO)
        for layer, (gW, gb) in zip(net.layers, grads_ref, strict=True):
            assert_close(layer.grads["W"], gW, np.float64, chain)
            assert_close(layer.grads["b"], gb, np.float64, chain)


def test_first_layer_block_is_W_over_b_in_the_flat_vector():
    net = _network(["relu", "relu", "linear"], 0.0, "cross_entropy")
    first = net.layers[0]
    assert np.shares_memory(net.first_block, net.params_flat)
    assert np.array_equal(net.first_block[:-1], first.params["W"])
    assert np.array_equal(net.first_block[-1], first.params["b"])
    net.first_block_grad[...] = 3.0
    assert (first.grads["W"] == 3).all() and (first.grads["b"] == 3).all()
    # every weight is in the prefix that L2 and weight decay touch
    W_total = sum(layer.params["W"].size for layer in net.layers)
    assert net.n_weights == W_total
    for layer in net.layers:
        assert np.shares_memory(layer.params["W"], net.params_flat[:W_total])
        assert not np.shares_memory(layer.params["b"], net.params_flat[:W_total])
    plain = np.concatenate([L.params[k].ravel() for k in ("W", "b") for L in net.layers])
    assert np.array_equal(net.canonical(net.params_flat), plain)
    copy = np.zeros_like(net.params_flat)
    assert np.array_equal(net.set_canonical(plain, copy), net.params_flat)


def test_shapes_are_checked():
    net = _network(["relu", "relu", "linear"], 0.0, "cross_entropy")
    with pytest.raises(ValueError, match="shape"):
        net.forward(np.zeros((4, 6)), training=True)  # one column too many
    Y = np.zeros((4, 3))
    with pytest.raises(ValueError, match="columns"):
        net.evaluate(np.zeros((4, 6)), Y)
    with pytest.raises(ValueError, match="columns"):
        net.evaluate(np.zeros((4, 5)), Y, ones_column=True)
    ones = np.ones((4, 6))
    ones[:, :-1] = np.random.default_rng(0).standard_normal((4, 5))
    assert net.evaluate(ones, Y, ones_column=True) == pytest.approx(net.evaluate(ones[:, :-1], Y))


def test_fit_names_a_network_that_does_not_fit_the_data():
    from services.trainer import fit

    from .conftest import make_spec

    net = _network(["relu", "relu", "linear"], 0.0, "cross_entropy").astype(np.float32)
    with pytest.raises(ValueError, match="2 features but the network takes 5"):
        fit(make_spec(), network=net)  # moons: 2 features


def test_evaluate_marks_exactly_the_relu_units_that_fired():
    net = _network(["relu", "relu", "linear"], 0.0, "cross_entropy")
    net.layers[0].params["b"][:3] = -50.0  # three units of layer 0 never fire
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 5))
    Y = net.encode_targets(rng.integers(0, 3, 40))
    active = [np.zeros(7, bool), np.zeros(6, bool), None]
    net.evaluate(X, Y, None, active)
    A0 = np.maximum(X @ net.layers[0].params["W"] + net.layers[0].params["b"], 0)
    A1 = np.maximum(A0 @ net.layers[1].params["W"] + net.layers[1].params["b"], 0)
    assert np.array_equal(active[0], (A0 > 0).any(axis=0)) and not active[0][:3].any()
    assert np.array_equal(active[1], (A1 > 0).any(axis=0))
