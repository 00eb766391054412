"""A job's MLflow model (services.mirror.models): the hand-built model directory loads
with ``mlflow.pyfunc.load_model`` and answers exactly what the predict route answers
(the same rows: the same numbers), from a DataFrame or an array, in a Python that cannot
import sweeplab."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from services.mirror.models import MODEL_DIR, model_files, requirements
from services.models import trained_model, weights_blob
from services.trainer import fit

SPECS = {
    "iris": {
        "dataset": {"name": "iris"},
        "architecture": {"layers": [{"units": 8}, {"units": 5, "activation": "leaky_relu"}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 3},
    },
    "moons-sigmoid": {
        "dataset": {"name": "moons", "n_samples": 100},
        "architecture": {
            "layers": [{"units": 6, "activation": "sigmoid"}],
            "output_activation": "sigmoid",
        },
        "hyperparameters": {"learning_rate": 0.3, "epochs": 3},
    },
    "sine-float64": {
        "dataset": {"name": "sine", "n_samples": 100},
        "architecture": {"layers": [{"units": 8, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.05, "epochs": 3, "dtype": "float64"},
    },
    "words": {
        "dataset": {
            "name": "arrays",
            "X": [[float(i), float(i % 5) * 10.0, 1.0] for i in range(60)],
            "y": ["cat" if i % 3 else ("dog" if i % 2 else "emu") for i in range(60)],
            "standardize": False,
        },
        "architecture": {"layers": [{"units": 4, "activation": "relu"}]},
        "hyperparameters": {"learning_rate": 0.01, "epochs": 3},
    },
}


def write_model(tmp_path: Path, spec: dict) -> tuple[Path, object]:
    result = fit(spec)
    model = trained_model(spec, weights_blob(result.network, result.data))
    files = model_files("0" * 32, "run-1", model.npz_bytes(), "2026-01-01T00:00:00+00:00")
    for name, data in files.items():
        Path(tmp_path, name).parent.mkdir(parents=True, exist_ok=True)
        Path(tmp_path, name).write_bytes(data)
    return tmp_path / MODEL_DIR, model


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_mlflow_model_answers_what_the_route_answers(tmp_path, name):
    path, model = write_model(tmp_path, SPECS[name])
    loaded = mlflow.pyfunc.load_model(str(path))
    X = np.random.default_rng(3).normal(2.0, 3.0, size=(9000, model.n_features))  # 2 chunks
    answer = model.predict(X.tolist())
    for given in (X, pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])):
        got = loaded.predict(given)
        assert isinstance(got, np.ndarray)
        assert got.tolist() == answer.predictions  # exactly: the same computation
    if answer.probabilities is not None:
        proba = loaded.unwrap_python_model().predict_proba(X)
        assert proba.tolist() == answer.probabilities
    # one row takes another BLAS path than a batch (its last bits may differ): the same
    # one row through the route's computation
    assert loaded.predict(X[:1]).tolist() == model.predict(X[:1].tolist()).predictions


def test_the_model_directory_is_small_and_explicit(tmp_path):
    path, model = write_model(tmp_path, SPECS["iris"])
    assert sorted(p.name for p in path.rglob("*") if p.is_file()) == [
        "MLmodel",
        "job.npz",
        "model.py",
        "python_env.yaml",
        "requirements.txt",
    ]
    assert (path / "artifacts" / "job.npz").read_bytes() == model.npz_bytes()
    assert (path / "requirements.txt").read_text().splitlines() == requirements()
    assert [r.split("==")[0] for r in requirements()] == ["mlflow", "numpy", "pandas"]
    assert "import services" not in (path / "model.py").read_text()


def test_a_python_without_sweeplab_loads_and_runs_it(tmp_path):
    path, model = write_model(tmp_path, SPECS["words"])
    X = [[1.0, 20.0, 1.0], [55.0, 0.0, 1.0], [12.0, 40.0, 1.0]]
    script = (  # sweeplab's packages cannot be imported (None in sys.modules: ImportError)
        "import json, sys\n"
        "sys.modules.update(dict.fromkeys(['services', 'api', 'worker', 'client']))\n"
        "import mlflow.pyfunc\n"
        f"m = mlflow.pyfunc.load_model({str(path)!r})\n"
        "assert not [n for n, m in sys.modules.items() if m and n.split('.')[0] == 'services']\n"
        f"print(json.dumps(m.predict({X!r}).tolist()))\n"
    )
    out = subprocess.run(  # -I: no current directory or user site on sys.path
        [sys.executable, "-I", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == model.predict(X).predictions


def test_building_the_files_costs_well_under_a_millisecond_a_job(tmp_path):
    result = fit(SPECS["iris"])
    model = trained_model(SPECS["iris"], weights_blob(result.network, result.data))
    npz = model.npz_bytes()
    model_files("0" * 32, "run", npz, "")  # warm
    started = time.perf_counter()
    for _ in range(200):
        model_files("0" * 32, "run", npz, "")
    assert (time.perf_counter() - started) / 200 < 0.001  # measured: ~0.08 ms
