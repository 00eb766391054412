"""sweeplab's NumPy trainer: feed-forward networks and backpropagation from first principles.

A pure library (numpy and the standard library; scikit-learn only to read its
bundled datasets). Entry points::

    from services.trainer import parse_spec, load_dataset, build_network, fit
    result = fit({"dataset": {"name": "moons"},
                  "architecture": {"layers": [{"units": 32}]},
                  "hyperparameters": {"learning_rate": 0.1}})

``fit_packed(specs)`` trains the trials of a sweep that differ only in scalar
hyperparameters (``pack_key``) as one stack, each with its solo numbers;
``packing_pays`` says when that is faster.
"""

from .build import build_network, load_dataset, load_uploaded
from .data import Dataset, dataset_from_arrays
from .diagnostics import diagnose
from .gradcheck import gradient_check
from .lr_finder import lr_range_test, read_curve, smooth
from .network import Network
from .packed import PackError, fit_packed, pack_key, pack_size, packing_pays
from .records import improves
from .spec import Spec, SpecError, parse_spec
from .train import TrainResult, fit, flatten_record

__all__ = [
    "Dataset",
    "Network",
    "PackError",
    "Spec",
    "SpecError",
    "TrainResult",
    "build_network",
    "dataset_from_arrays",
    "diagnose",
    "fit",
    "fit_packed",
    "flatten_record",
    "gradient_check",
    "improves",
    "load_dataset",
    "load_uploaded",
    "lr_range_test",
    "pack_key",
    "pack_size",
    "packing_pays",
    "parse_spec",
    "read_curve",
    "smooth",
]
