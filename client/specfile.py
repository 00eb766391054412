"""Spec files: JSON or YAML (told apart by content), a job or a sweep (told apart by keys)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml

from client.errors import SpecFileError

Kind = Literal["job", "sweep"]

#: Keys only a sweep spec has (services/specs/sweep.py), and those of a job spec.
SWEEP_KEYS = frozenset({"base", "parameters", "method", "objective", "warm_start"})
JOB_KEYS = frozenset({"dataset", "architecture", "hyperparameters"})


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2's booleans: only ``true`` / ``false``. YAML 1.1 (PyYAML's default) also
    reads ``yes``, ``no``, ``on`` and ``off`` as booleans, so ``packing: off`` became
    ``false``; here they stay the words written (the API still takes ``yes`` / ``no``
    where it expects a boolean)."""


_BOOL = "tag:yaml.org,2002:bool"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def spec_kind(spec: Any) -> Kind:
    """``"sweep"`` for a sweep spec (it has a ``base`` job), ``"job"`` for a job spec."""
    if not isinstance(spec, dict):
        raise SpecFileError(f"a spec is a mapping (an object), not {type(spec).__name__}")
    if "base" in spec or ("parameters" in spec and not JOB_KEYS & spec.keys()):
        return "sweep"
    if JOB_KEYS & spec.keys():
        return "job"
    raise SpecFileError(
        "neither a job (it would have dataset, architecture, hyperparameters) "
        "nor a sweep (base, parameters); keys: " + (", ".join(sorted(spec)) or "none")
    )


def parse_spec_text(text: str, source: str = "<spec>") -> dict[str, Any]:
    """The spec in ``text``: JSON when it starts with ``{``, else YAML (a superset)."""
    body = text.lstrip("\ufeff").lstrip()
    if not body:
        raise SpecFileError(f"{source} is empty")
    if body.startswith(("{", "[")):
        try:
            spec = json.loads(body)
        except json.JSONDecodeError as err:
            raise SpecFileError(
                f"{source}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
            ) from err
    else:
        try:
            spec = yaml.load(body, Loader=_Yaml12Loader)  # noqa: S506  # a SafeLoader
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err)
            raise SpecFileError(f"{source}: not valid YAML{where}: {problem}") from err
    if not isinstance(spec, dict):
        raise SpecFileError(f"{source}: a spec is a mapping (an object), not {type(spec).__name__}")
    return spec


def load_spec(path: str | Path) -> tuple[Kind, dict[str, Any]]:
    """Read a spec file (``-``: standard input); return its kind and the spec."""
    if str(path) == "-":
        text, source = sys.stdin.read(), "standard input"
    else:
        try:
            text, source = Path(path).read_text(encoding="utf-8"), str(path)
        except OSError as err:
            raise SpecFileError(f"cannot read {path}: {err.strerror or err}") from err
        except UnicodeDecodeError as err:
            raise SpecFileError(f"{path} is not UTF-8 text: {err}") from err
    spec = parse_spec_text(text, source)
    return spec_kind(spec), spec
