"""Helpers for the trainer tests: small specs and hand-built networks."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from services.trainer.layers import Dense
from services.trainer.losses import get_loss
from services.trainer.network import Network

BASE_SPEC = {
    "name": "t",
    "dataset": {"name": "moons", "n_samples": 200, "seed": 0},
    "architecture": {"layers": [{"units": 16, "activation": "relu"}]},
    "hyperparameters": {"learning_rate": 0.1, "epochs": 5, "batch_size": 32},
}


def make_spec(**sections) -> dict:
    """BASE_SPEC with sections updated key by key, e.g. make_spec(hyperparameters={...}).

    ``dataset`` and ``architecture`` replace the base section whole.
    """
    spec = copy.deepcopy(BASE_SPEC)
    for key, value in sections.items():
        if key == "hyperparameters":
            spec[key].update(value)
        else:
            spec[key] = value
    return spec


def make_network(
    sizes, hidden, output, loss, *, task="classification", seed=0, dtype=np.float64
) -> Network:
    """A network with random (He-scaled) weights and small random biases."""
    rng = np.random.default_rng(seed)
    loss_obj = get_loss(loss)
    acts = [hidden] * (len(sizes) - 2) + ["linear" if loss_obj.fused_activation else output]
    layers = []
    for i, act in enumerate(acts):
        layer = Dense(sizes[i], sizes[i + 1], act, 0.0, dtype)
        W = rng.standard_normal((sizes[i], sizes[i + 1])) * np.sqrt(2 / sizes[i])
        layer.params["W"][...] = W
        layer.params["b"][...] = 0.1 * rng.standard_normal(sizes[i + 1])
        layers.append(layer)
    return Network(layers, loss_obj, output, task)


def strip_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.fixture
def spec():
    return make_spec()
