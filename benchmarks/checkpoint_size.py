"""Checkpoint size of a 2-unit network trained on about 670 KB of inline data (issue 12).

    .venv/bin/python benchmarks/checkpoint_size.py

Version 2 checkpoints carried the spec, and with it the whole inline dataset
(672,130 bytes here); version 3 holds the training state and the spec's digest
only (1,216 bytes).
"""

from __future__ import annotations

import json

import numpy as np

from services.trainer import fit
from services.trainer.checkpoint import load_checkpoint


def main() -> None:
    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(26_000, 2)), 6)
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    dataset = {"name": "arrays", "X": X.tolist(), "y": y.tolist()}
    spec = {
        "dataset": dataset,
        "architecture": {"layers": [{"units": 2}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 2},
    }
    blobs: dict[int, bytes] = {}
    fit(spec, checkpoint_every=1, on_checkpoint=lambda e, b: blobs.setdefault(e, b))
    meta = load_checkpoint(blobs[1]).meta
    print(
        f"inline data: {len(json.dumps(dataset)):,} bytes of JSON; checkpoint (version "
        f"{meta['version']}): {len(blobs[1]):,} bytes"
    )


if __name__ == "__main__":
    main()
