"""sweeplab from Python, notebook style: run each cell (`# %%`) in turn, or the whole file.

Needs a server: `make up` (then the local admin token in var/admin.token is found by
itself), or SWEEPLAB_URL and SWEEPLAB_TOKEN in the environment.

    .venv/bin/python examples/client_example.py
"""

# %% Connect: flags, then SWEEPLAB_URL / SWEEPLAB_TOKEN, then the local stack's files
from __future__ import annotations

import json
import time

import numpy as np
from sklearn.datasets import load_digits

from client import Client
from client.config import resolve

where = resolve()
client = Client(where.url, where.token)
print(f"server {where.url} (from {where.url_from}); I am {client.me()['user']}")

# %% A small learning-rate sweep on scikit-learn's digits: 4 rates, 8 epochs each
spec = {
    "name": "example-lr-sweep",
    "base": {
        "dataset": {"name": "digits", "validation_split": 0.2, "seed": 0},
        "architecture": {"layers": [{"units": 32, "activation": "relu"}]},
        "hyperparameters": {"learning_rate": 0.1, "batch_size": 32, "epochs": 8, "seed": 0},
    },
    "method": "grid",
    "parameters": {"hyperparameters.learning_rate": {"values": [0.003, 0.03, 0.3, 3.0]}},
    "objective": {"metric": "val_loss", "goal": "minimize"},
    "max_concurrency": 2,
}
sweep = client.submit(spec)  # a job or a sweep, told apart by its keys
print(f"submitted sweep {sweep['id']}: {sweep['n_trials']} trials")

# %% Wait, with a callback that sees every poll's answer
started = time.monotonic()


def progress(s: dict) -> None:
    counts = " ".join(f"{k}={v}" for k, v in sorted(s["counts"].items()) if v)
    print(f"  {time.monotonic() - started:5.1f}s {s['status']}: {counts}")


sweep = client.wait(sweep["id"], callback=progress, poll=1.0)

# %% The leaderboard, best first
for row in client.leaderboard(sweep["id"]):
    lr = row["params"]["hyperparameters.learning_rate"]
    print(f"  #{row['rank']} lr={lr:<6} {row['status']:<10} val_loss={row['objective']}")
best = sweep["best_trial"]["job_id"]

# %% The best trial's learning curve as columns (pandas.DataFrame(curve) if you have pandas)
curve = client.metrics_table(best)
print("val_loss by epoch:", [round(v, 4) for v in curve["val_loss"]])

# %% Its trained network: plain numpy arrays
weights = client.weights(best)
shapes = {name: a.shape for name, a in weights.items() if name.startswith(("W", "b"))}
print("weights:", shapes, "trained with", json.loads(str(weights["spec"]))["hyperparameters"])

# %% Predict on raw rows (the server standardizes them as in training)
X, y = load_digits(return_X_y=True)
answer = client.predict(best, X[:10].tolist())
print("predictions:", answer["predictions"], "true:", y[:10].tolist())
print("probabilities of row 0:", np.round(answer["probabilities"][0], 3).tolist())

# %% The same comparison in MLflow (when the server mirrors to it)
print("compare in MLflow:", client.mlflow_link(sweep["id"]) or "(mirroring is off)")
client.close()
