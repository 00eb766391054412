"""The trainer is a pure library: importing it loads no service framework."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_import_loads_no_service_framework():
    code = (
        "import sys, services.trainer\n"
        "from services.trainer import fit, parse_spec, load_dataset\n"
        "bad = [m for m in ('flask', 'celery', 'sqlalchemy', 'mlflow', 'pydantic', 'torch',"
        " 'sklearn') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node, [node.module or ""]


def test_trainer_sources_import_only_numpy_and_stdlib():
    """numpy and the standard library; scikit-learn only inside the loader of its
    bundled datasets (``data._sklearn``), so that importing the trainer never loads it."""
    for path in (ROOT / "services" / "trainer").glob("*.py"):
        tree = ast.parse(path.read_text())
        loaders = [
            fn for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) and fn.name == "_sklearn"
        ]
        in_loader = {id(n) for fn in loaders for n, _ in _imports(fn)}
        for node, names in _imports(tree):
            for name in names:
                top = name.split(".")[0]
                if top == "sklearn":
                    assert path.name == "data.py" and id(node) in in_loader, (path, name)
                else:
                    assert top == "numpy" or top in sys.stdlib_module_names, (path, name)
