"""The MLflow model of a sweeplab job (models from code): its network's forward pass in
NumPy, standalone.

MLflow copies this file into every succeeded job's run (``model/model.py``, see
``services.mirror.models``) beside ``model/job.npz``, the file that
``GET /api/v1/jobs/<id>/weights`` answers. ``mlflow.pyfunc.load_model`` runs it in any
Python with mlflow, numpy and pandas: it imports nothing of sweeplab. Each step is
the trainer's own (``services/trainer``: ``Dense.forward``, the activations,
``Network.predict`` in chunks of 8,192 rows, ``TrainResult.predict``), so the answers
are the numbers of ``POST /api/v1/jobs/<id>/predict``::

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    model.predict(X)                              # labels as given, or targets
    model.unwrap_python_model().predict_proba(X)  # classification: one column a class

``X``: a DataFrame or array of raw features, one row a sample, in the data's columns'
order.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

EVAL_CHUNK = 8192  # the trainer's rows per forward pass (services.trainer.network)
LEAKY_ALPHA = 0.01  # the trainer's leaky ReLU slope
FUSED = ("cross_entropy", "binary_cross_entropy")  # losses fused with their output activation


def activate(name, Z):
    """``g(Z)`` in place, as the trainer's activations compute it."""
    if name == "linear":
        return Z
    if name == "relu":
        return np.maximum(Z, np.zeros(Z.shape[-1], Z.dtype), out=Z)
    if name == "leaky_relu":
        return np.maximum(Z, LEAKY_ALPHA * Z, out=Z)
    if name == "sigmoid":
        A = np.multiply(Z, 0.5, out=Z)
        np.tanh(A, out=A)
        A += 1.0
        A *= 0.5
        return A
    if name == "tanh":
        return np.tanh(Z, out=Z)
    if name == "softmax":
        A = np.subtract(Z, np.maximum.reduce(Z, axis=1, keepdims=True), out=Z)
        np.exp(A, out=A)
        A /= np.add.reduce(A, axis=1, keepdims=True)
        return A
    raise ValueError(f"unknown activation {name!r}")


class SweeplabNetwork(PythonModel):
    """A trained sweeplab network: raw rows in, labels or targets out."""

    def load_context(self, context):
        with np.load(context.artifacts["job"], allow_pickle=False) as z:
            arch = json.loads(str(z["architecture"]))
            n = len(arch["activations"])
            self.layers = [(z[f"W{i}"], z[f"b{i}"]) for i in range(1, n + 1)]
            self.stats = {
                key: np.array(z[key])
                for key in ("feature_mean", "feature_std", "target_mean", "target_std")
                if key in z.files
            }
            self.classes = np.array(z["classes"]) if "classes" in z.files else None
        self.activations = arch["activations"]
        # a loss fused with the output activation: the last layer is linear, then this
        self.output = arch["output_activation"] if arch["loss"] in FUSED else None
        self.task = arch["task"]
        self.dtype = np.dtype(arch["dtype"])

    def outputs(self, model_input):
        """The network's outputs (probabilities, or standardized targets), (n, n_out)."""
        X = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
        X = np.asarray(X, np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if "feature_mean" in self.stats:
            X = (X - self.stats["feature_mean"]) / self.stats["feature_std"]
        X = np.asarray(X, self.dtype)
        out = []
        for s in range(0, max(len(X), 1), EVAL_CHUNK):
            A = X[s : s + EVAL_CHUNK]
            for (W, b), name in zip(self.layers, self.activations, strict=True):
                Z = A @ W
                Z += b
                A = activate(name, Z)
            out.append(activate(self.output, A) if self.output else A)
        return np.concatenate(out)

    def predict_proba(self, model_input):
        """Classification: the probability of each class (columns in ``classes``' order)."""
        out = self.outputs(model_input)
        return np.concatenate([1 - out, out], axis=1) if out.shape[1] == 1 else out

    def predict(self, context, model_input, params=None):
        out = self.outputs(model_input)
        if self.task == "classification":
            idx = (out[:, 0] > 0.5).astype(np.int64) if out.shape[1] == 1 else out.argmax(axis=1)
            return self.classes[idx] if self.classes is not None else idx
        values = out.astype(np.float64)
        if "target_mean" in self.stats:
            values = values * self.stats["target_std"] + self.stats["target_mean"]
        return values[:, 0] if values.shape[1] == 1 else values


mlflow.models.set_model(SweeplabNetwork())
