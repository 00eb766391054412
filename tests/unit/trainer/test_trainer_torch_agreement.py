"""Agreement with PyTorch: same initial weights, full batch, float64, 20 epochs.

Every epoch's training loss (before the update) and validation loss (after
it) must equal PyTorch's to 1e-10 relative, for each optimizer with and
without L2, on a classification and a regression dataset.
"""

from __future__ import annotations

import pytest

from services.trainer import build_network, fit, load_dataset

torch = pytest.importorskip("torch")

EPOCHS = 20
L2 = 0.01

OPTIMIZERS = {
    # name: (sweeplab hyperparameters, torch optimizer factory(weights, biases))
    "sgd": (
        {"optimizer": "sgd", "learning_rate": 0.1},
        lambda w, b: torch.optim.SGD(w + b, lr=0.1),
    ),
    "sgd_momentum": (
        {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9},
        lambda w, b: torch.optim.SGD(w + b, lr=0.05, momentum=0.9),
    ),
    "nesterov": (
        {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
        lambda w, b: torch.optim.SGD(w + b, lr=0.05, momentum=0.9, nesterov=True),
    ),
    "rmsprop": (
        {"optimizer": "rmsprop", "learning_rate": 0.003},
        lambda w, b: torch.optim.RMSprop(w + b, lr=0.003),
    ),
    "adam": (
        {"optimizer": "adam", "learning_rate": 0.01},
        lambda w, b: torch.optim.Adam(w + b, lr=0.01),
    ),
    # decoupled decay on the weights only (PyTorch: a parameter group per kind)
    "adamw": (
        {"optimizer": "adamw", "learning_rate": 0.01},
        lambda w, b: torch.optim.AdamW(
            [{"params": w, "weight_decay": 0.01}, {"params": b, "weight_decay": 0.0}], lr=0.01
        ),
    ),
}

DATASETS = {
    "classification": (
        {"name": "wine", "seed": 0},
        [{"units": 16, "activation": "relu"}, {"units": 8, "activation": "tanh"}],
    ),
    "regression": (
        {"name": "diabetes", "seed": 0},
        [{"units": 16, "activation": "tanh"}, {"units": 8, "activation": "sigmoid"}],
    ),
}


def _torch_losses(net, data, make_optimizer, l2):
    torch.manual_seed(0)
    modules = []
    for i, layer in enumerate(net.layers):
        linear = torch.nn.Linear(layer.n_in, layer.n_out, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.params["W"].T.copy()))
            linear.bias.copy_(torch.from_numpy(layer.params["b"].copy()))
        modules.append(linear)
        if i < len(net.layers) - 1:
            modules.append(
                {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}[
                    layer.activation.name
                ]()
            )
    model = torch.nn.Sequential(*modules)
    weights = [m.weight for m in modules if isinstance(m, torch.nn.Linear)]
    biases = [m.bias for m in modules if isinstance(m, torch.nn.Linear)]
    optimizer = make_optimizer(weights, biases)
    if net.loss.name == "cross_entropy":
        criterion = torch.nn.CrossEntropyLoss()
        y_train, y_val = torch.from_numpy(data.y_train), torch.from_numpy(data.y_val)
    else:
        criterion = torch.nn.MSELoss()
        y_train = torch.from_numpy(data.y_train[:, None])
        y_val = torch.from_numpy(data.y_val[:, None])
    X_train, X_val = torch.from_numpy(data.X_train), torch.from_numpy(data.X_val)
    train_losses, val_losses = [], []
    for _ in range(EPOCHS):
        optimizer.zero_grad()
        loss = criterion(model(X_train), y_train)
        train_losses.append(loss.item())
        loss.backward()
        if l2:
            with torch.no_grad():
                for w in weights:
                    w.grad.add_(w, alpha=l2)  # L2: l2 * W on the weights only
        optimizer.step()
        with torch.no_grad():
            val_losses.append(criterion(model(X_val), y_val).item())
    return train_losses, val_losses


@pytest.mark.parametrize("l2", [0.0, L2], ids=["no_l2", "l2"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("task", sorted(DATASETS))
def test_losses_equal_pytorch(task, optimizer, l2):
    dataset, layers = DATASETS[task]
    hp, make_optimizer = OPTIMIZERS[optimizer]
    spec = {
        "dataset": dataset,
        "architecture": {"layers": layers, "initializer": "xavier"},
        "hyperparameters": {
            **hp,
            "batch_size": None,
            "epochs": EPOCHS,
            "dtype": "float64",
            "l2": l2,
            "seed": 7,
        },
    }
    data = load_dataset(dataset)
    net = build_network(spec, data)
    expected_train, expected_val = _torch_losses(net, data, make_optimizer, l2)
    result = fit(spec, data=data, network=net)
    ours_train = [r["train_loss"] for r in result.history]
    ours_val = [r["val_loss"] for r in result.history]
    assert ours_train == pytest.approx(expected_train, rel=1e-10, abs=0)
    assert ours_val == pytest.approx(expected_val, rel=1e-10, abs=0)
    assert expected_train[-1] < expected_train[0]  # it did learn something


def test_binary_cross_entropy_matches_bce_with_logits():
    spec = {
        "dataset": {"name": "breast_cancer"},
        "architecture": {"layers": [{"units": 8, "activation": "relu"}]},
        "hyperparameters": {
            "optimizer": "adam",
            "learning_rate": 0.01,
            "batch_size": None,
            "epochs": 5,
            "dtype": "float64",
        },
    }
    data = load_dataset(spec["dataset"])
    net = build_network(spec, data)
    W0, b0 = net.layers[0].params["W"].copy(), net.layers[0].params["b"].copy()
    W1, b1 = net.layers[1].params["W"].copy(), net.layers[1].params["b"].copy()
    result = fit(spec, data=data, network=net)
    params = [torch.tensor(a, requires_grad=True) for a in (W0, b0, W1, b1)]
    opt = torch.optim.Adam(params, lr=0.01)
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train[:, None].astype(float))
    criterion = torch.nn.BCEWithLogitsLoss()
    for record in result.history:
        opt.zero_grad()
        out = torch.relu(X @ params[0] + params[1]) @ params[2] + params[3]
        loss = criterion(out, y)
        assert record["train_loss"] == pytest.approx(loss.item(), rel=1e-10, abs=0)
        loss.backward()
        opt.step()
