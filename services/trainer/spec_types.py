"""The normalized job spec: what ``parse_spec`` returns once every field is checked.

Plain dataclasses with every default filled in; ``Spec.to_dict()`` is the
JSON-serializable spec a run records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .data import CLASSIFICATION


@dataclass
class DatasetSpec:
    name: str
    validation_split: float = 0.2
    seed: int = 0
    standardize: bool = True
    standardize_targets: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # n_samples, noise, arms, X, y, ...

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "options"}
        for k, v in self.options.items():
            d[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return d


@dataclass
class LayerSpec:
    units: int
    activation: str = "relu"


@dataclass
class ArchitectureSpec:
    layers: list[LayerSpec]
    output_activation: str
    initializer: str = "he"
    init_std: float = 0.01


@dataclass
class EarlyStoppingSpec:
    metric: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True

    @property
    def mode(self) -> str:
        return "max" if self.metric.endswith("accuracy") else "min"


@dataclass
class HyperParameters:
    learning_rate: float
    loss: str
    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    alpha: float = 0.99
    eps: float = 1e-8
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    batch_size: int | None = 32
    epochs: int = 20
    lr_schedule: dict = field(default_factory=lambda: {"name": "constant", "warmup_epochs": 0})
    l2: float = 0.0
    dropout: float = 0.0
    gradient_clip_norm: float | None = None
    early_stopping: EarlyStoppingSpec | None = None
    seed: int = 0
    dtype: str = "float32"
    train_metrics: str = "after_epoch"

    def optimizer_options(self) -> dict:
        return {
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
            "alpha": self.alpha,
            "eps": self.eps,
            "betas": tuple(self.betas),
            "weight_decay": self.weight_decay,
        }


@dataclass
class Spec:
    """A validated job spec. Build with ``parse_spec``."""

    name: str
    dataset: DatasetSpec
    architecture: ArchitectureSpec
    hyperparameters: HyperParameters
    task: str = CLASSIFICATION
    n_classes: int | None = None
    #: whether output activation / loss were inferred (and so may follow other data)
    head_inferred: tuple[bool, bool] = (False, False)

    def to_dict(self) -> dict:
        """The normalized spec: defaults filled in, JSON-serializable."""
        return {
            "name": self.name,
            "dataset": self.dataset.to_dict(),
            "architecture": asdict(self.architecture),
            "hyperparameters": asdict(self.hyperparameters),
        }
