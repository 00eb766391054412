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


def test_trainer_sources_import_only_numpy_and_stdlib():
    allowed_third_party = {"numpy", "sklearn"}
    for path in (ROOT / "services" / "trainer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed_third_party or top in sys.stdlib_module_names, (path, name)
