"""Checkpoints: the full training state as bytes, without pickle.

A checkpoint is an ``.npz`` archive (``np.savez``) holding the arrays (the
flat parameter vector, the optimizer's moment buffers, the best parameters
kept for early stopping) and one more array, ``meta``: UTF-8 JSON with
the rest of the training state (epoch, architecture, optimizer step count,
the training generator's ``bit_generator.state``, early-stopping state) and
``spec_sha256``, the digest of the spec that took it (:func:`spec_digest`),
which resuming checks. It loads with ``allow_pickle=False``.

The spec itself is not in it: with inline data it carries the whole dataset,
and the job that owns the checkpoint has its spec anyway. Version 2
checkpoints held it under ``meta["spec"]`` (and no digest); they still load,
unchecked, as before.

The records of the epochs so far are not in it: stored in every checkpoint
they would make the bytes written over a run grow with the square of its
length, and whoever resumes has them already (``fit(..., history=...)``).
Version 1 checkpoints held them under ``meta["history"]``; they still load.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field

import numpy as np

FORMAT = "sweeplab-checkpoint"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


@dataclass
class Checkpoint:
    meta: dict
    params: np.ndarray
    optimizer_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    best_params: np.ndarray | None = None

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])


def dump_checkpoint(ckpt: Checkpoint) -> bytes:
    """Serialize a checkpoint to ``.npz`` bytes."""
    meta = dict(ckpt.meta, format=FORMAT, version=VERSION)
    arrays = {"params": ckpt.params, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for key, value in ckpt.optimizer_arrays.items():
        arrays[f"opt.{key}"] = value
    if ckpt.best_params is not None:
        arrays["best_params"] = ckpt.best_params
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds
    return buf.getvalue()


#: What resuming reads from a checkpoint's metadata.
REQUIRED_META = {"epoch", "architecture", "optimizer", "rng", "tracker"}


def spec_digest(spec_dict: dict) -> str:
    """SHA-256 of a normalized spec (``Spec.to_dict()``): the data, architecture and
    hyperparameters that a checkpoint's state belongs to. Not its ``name`` (a label)
    nor its ``epochs`` (a run may resume to stop sooner or to go on longer)."""
    body = {k: v for k, v in spec_dict.items() if k != "name"}
    hp = body.get("hyperparameters")
    if isinstance(hp, dict):
        body["hyperparameters"] = {k: v for k, v in hp.items() if k != "epochs"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_checkpoint(blob: bytes) -> Checkpoint:
    """Read bytes written by ``dump_checkpoint``; anything else is a ``ValueError``."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"a checkpoint is bytes, got {type(blob).__name__}")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            opt = {k[4:]: z[k] for k in z.files if k.startswith("opt.")}
            best = z["best_params"] if "best_params" in z.files else None
            params = z["params"]
    # ValueError covers JSON and UTF-8 decoding errors; a truncated or corrupted
    # archive is EOFError or BadZipFile, or NotImplementedError / RuntimeError
    # when the damage reads as an unknown compression or an encrypted entry
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise ValueError(f"not a sweeplab checkpoint: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("not a sweeplab checkpoint")
    if meta.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"checkpoint version {meta.get('version')} is not one of {READABLE_VERSIONS}"
        )
    required = REQUIRED_META | ({"spec_sha256"} if meta["version"] >= 3 else set())
    missing = sorted(required - meta.keys())
    if missing:
        raise ValueError(f"not a sweeplab checkpoint: its metadata lacks {', '.join(missing)}")
    return Checkpoint(meta, params, opt, best)


def checkpoint_network(blob: bytes):
    """The network a checkpoint holds: its architecture with the checkpoint's weights
    (no optimizer state), e.g. to hand out the weights of a job that stopped mid-way."""
    from .network import _from_architecture  # late: network imports much; loading needs none

    ckpt = load_checkpoint(blob)
    arch = ckpt.meta["architecture"]
    net = _from_architecture(arch, arch["dtype"])
    net.set_canonical(ckpt.params)
    return net
