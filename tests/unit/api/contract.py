"""The API's contract, checked from its own OpenAPI document.

:class:`Contract` validates an answer against the document: its path and
method are documented, its status is declared, its content type is one the
operation lists, and a JSON body validates (jsonschema, draft 2020-12)
against the declared schema with every object that declares properties
closed (``additionalProperties: false``), so that no field goes undeclared.
:class:`ContractClient` runs that check on every answer a test receives.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from werkzeug.exceptions import MethodNotAllowed, NotFound

METHODS = ("get", "put", "post", "delete", "patch")


def closed(node: Any) -> Any:
    """``node`` with ``additionalProperties: false`` on each object schema that lists properties."""
    if isinstance(node, dict):
        out = {key: closed(value) for key, value in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [closed(value) for value in node]
    return node


def path_of(rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``/jobs/<job_id>`` -> ``/jobs/{job_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


class Contract:
    def __init__(self, document: dict[str, Any]):
        self.document = document
        self.components = closed(copy.deepcopy(document.get("components", {})))
        self.operations: dict[str, dict[str, Any]] = {}  # full path -> path item
        for template, item in document["paths"].items():
            server = (item.get("servers") or document["servers"])[0]["url"].rstrip("/")
            self.operations[server + template] = item

    def documented(self) -> set[tuple[str, str]]:
        """(full path template, method) of every documented operation."""
        return {(p, m) for p, item in self.operations.items() for m in item if m in METHODS}

    def find(self, path: str) -> tuple[str, dict[str, Any]] | None:
        for template, item in self.operations.items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, path):
                return template, item
        return None

    def validate(self, schema: dict[str, Any], body: Any, where: str) -> None:
        validator = Draft202012Validator({**closed(schema), "components": self.components})
        problems = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not problems, f"{where}: " + "; ".join(
            f"at {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in problems[:5]
        )

    def check(self, method: str, path: str, status: int, mimetype: str, body: Any) -> None:
        """Assert that this answer is one the document promises."""
        method = method.lower()
        where = f"{method.upper()} {path} -> {status}"
        found = self.find(path)
        if found is None or method not in found[1]:
            # No such route or method: the app's own 404/405, in the error format.
            assert status in (404, 405), f"{where}: undocumented path or method"
            self.validate({"$ref": "#/components/schemas/ErrorResponse"}, body, where)
            return
        template, item = found
        responses = item[method].get("responses", {})
        assert str(status) in responses, (
            f"{where}: status {status} is not declared for {method.upper()} {template} "
            f"(declared: {sorted(responses)})"
        )
        content = responses[str(status)].get("content", {})
        if not content:  # declared without a body (204): none may come
            assert not mimetype and body is None, f"{where}: a body ({mimetype}) where none is"
            return
        assert mimetype in content, f"{where}: {mimetype} not among {sorted(content)}"
        if mimetype == "application/json":
            self.validate(content[mimetype]["schema"], body, where)


class ContractClient(FlaskClient):
    """A test client that checks every answer against the app's OpenAPI document."""

    contract: Contract

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        request = response.request
        if not _static(self.application, request.path, request.method):
            body = response.get_json(silent=True) if response.is_json else None
            self.contract.check(
                request.method, request.path, response.status_code, response.mimetype, body
            )
        return response


def _static(app: Flask, path: str, method: str) -> bool:
    """Whether ``path`` is a static file (Swagger UI's assets), which the document leaves out."""
    try:
        endpoint, _ = app.url_map.bind("localhost").match(path, method)
    except (NotFound, MethodNotAllowed):
        return False
    return str(endpoint).split(".")[-1] == "static"


def contract_client(app: Flask) -> ContractClient:
    """The app's test client, checking every answer against the app's own document."""
    document = FlaskClient(app, app.response_class).get("/api/v1/openapi.json").get_json()
    client = ContractClient(app, app.response_class, use_cookies=True)
    client.contract = Contract(document)
    return client
