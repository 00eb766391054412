"""Backpropagation against central differences for every activation, loss and L2."""

from __future__ import annotations

import numpy as np
import pytest

from services.trainer import build_network, gradient_check, load_dataset
from services.trainer.activations import HIDDEN_ACTIVATIONS
from tests.numerics import assert_close, rounding_rtol

from .conftest import make_network, make_spec

# (output activation, loss, n_out, task)
HEADS = [
    ("softmax", "cross_entropy", 3, "classification"),
    ("sigmoid", "binary_cross_entropy", 1, "classification"),
    ("linear", "mse", 2, "regression"),
    ("sigmoid", "mse", 2, "regression"),
    ("tanh", "mse", 2, "regression"),
    ("softmax", "mse", 3, "regression"),
]


def _targets(rng, n, n_out, loss):
    if loss == "cross_entropy":
        return np.eye(n_out)[rng.integers(0, n_out, n)]
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (n, 1)).astype(float)
    return rng.standard_normal((n, n_out))


@pytest.mark.parametrize("l2", [0.0, 0.05])
@pytest.mark.parametrize("head", HEADS, ids=[f"{h[0]}-{h[1]}" for h in HEADS])
@pytest.mark.parametrize("hidden", HIDDEN_ACTIVATIONS)
def test_backprop_matches_central_differences(hidden, head, l2):
    output, loss, n_out, task = head
    rng = np.random.default_rng(1)
    net = make_network([4, 6, 5, n_out], hidden, output, loss, task=task, seed=2)
    X = rng.standard_normal((7, 4))
    Y = _targets(rng, 7, n_out, loss)
    result = gradient_check(net, X, Y, l2=l2)
    assert result["max_relative_error"] < 1e-6, result["errors"]
    assert result["passed"]


def test_gradient_check_on_built_network_ignores_dropout_and_leaves_it_untouched():
    spec = make_spec(
        dataset={"name": "iris"},
        architecture={"layers": [{"units": 8, "activation": "tanh"}, {"units": 6}]},
        hyperparameters={"learning_rate": 0.1, "dropout": 0.5, "dtype": "float32"},
    )
    data = load_dataset(spec["dataset"])
    net = build_network(spec, data)
    before = net.params_flat.copy()
    result = gradient_check(net, data.X_train[:16], data.y_train[:16], l2=0.01)
    assert result["max_relative_error"] < 1e-6
    assert net.dtype == np.float32 and np.array_equal(net.params_flat, before)


def test_gradient_check_detects_a_wrong_gradient():
    net = make_network([3, 4, 2], "tanh", "linear", "mse", task="regression")

    class BrokenMSE(type(net.loss)):
        def forward_backward(self, O, Y, dO):
            loss = super().forward_backward(O, Y, dO)
            dO *= 1.5
            return loss

    rng = np.random.default_rng(0)
    result = gradient_check(
        net, rng.standard_normal((5, 3)), rng.standard_normal((5, 2)), loss=BrokenMSE()
    )
    assert not result["passed"] and result["max_relative_error"] > 0.1


def test_fused_softmax_cross_entropy_gradient_is_softmax_minus_onehot_over_batch():
    from services.trainer.activations import Softmax
    from services.trainer.losses import CrossEntropy

    rng = np.random.default_rng(0)
    Z = rng.standard_normal((5, 3)) * 50  # large logits: must stay finite
    Y = np.eye(3)[[0, 2, 1, 1, 0]]
    dZ = np.empty_like(Z)
    loss = CrossEntropy().forward_backward(Z, Y, dZ)
    P = Softmax().forward(Z.copy())
    # the same formulas in another order: equal to rounding over 3 classes and 5 rows
    assert_close(dZ, (P - Y) / 5, np.float64, 3)
    shifted = Z - Z.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - (shifted * Y).sum(axis=1))
    assert loss == pytest.approx(expected, rel=rounding_rtol(np.float64, 3 + 5))


def test_binary_cross_entropy_is_stable_for_saturated_logits():
    from services.trainer.losses import BinaryCrossEntropy

    Z = np.array([[800.0], [-800.0], [0.0]])
    Y = np.array([[0.0], [1.0], [1.0]])
    dZ = np.empty_like(Z)
    loss = BinaryCrossEntropy().forward_backward(Z, Y, dZ)
    assert np.isfinite(loss) and np.isclose(loss, (800 + 800 + np.log(2)) / 3)
    assert np.allclose(dZ, np.array([[1.0], [-1.0], [-0.5]]) / 3)


def test_targets_that_fit_no_output_are_named():
    net = make_network([3, 4, 1], "tanh", "sigmoid", "binary_cross_entropy")
    X = np.random.default_rng(0).standard_normal((7, 3))
    labels = np.array([0, 1, 1, 0, 1, 0, 0])
    assert gradient_check(net, X, labels)["passed"]
    with pytest.raises(ValueError, match=r"shaped like the outputs \(7, 1\)"):
        gradient_check(net, X, np.eye(2)[labels])  # one-hot for a one-logit head
    with pytest.raises(ValueError, match="features"):
        gradient_check(net, X[:, :2], labels)
