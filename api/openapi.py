"""/api/v1/openapi.json: OpenAPI 3.1, built from the pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.specs import (
    ErrorResponse,
    JobCreate,
    JobPage,
    JobPublic,
    MetricsPublic,
    SweepCreate,
    SweepPage,
    SweepPublic,
)

bp = Blueprint("openapi", __name__)

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed request", 404: "no such id", 409: "conflicts with the current state",
            413: "body over the size limit", 415: "body is not JSON",
            422: "invalid spec (details name the fields)",
            503: "the job queue (Redis) is unavailable: try again"}  # fmt: skip
    return {str(c): _json("ErrorResponse", text[c]) for c in codes}


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


PAGE = [
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
]


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    models: list[type[BaseModel]] = [
        JobCreate, SweepCreate, JobPublic, JobPage, MetricsPublic, SweepPublic, SweepPage,
        ErrorResponse,
    ]  # fmt: skip
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas = top.get("$defs", {})
    body = {"required": True, "content": {"application/json": {"schema": _ref("JobCreate")}}}
    sweep_body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("SweepCreate")}},
    }
    paths = {
        "/jobs": {
            "post": {"operationId": "createJob", "summary": "Submit a job", "requestBody": body,
                     "responses": {"201": _json("JobPublic", "the queued job"),
                                   **_errors(400, 413, 415, 422, 503)}},
            "get": {"operationId": "listJobs", "summary": "List jobs (newest first)",
                    "parameters": [*PAGE,
                                   {"name": "status", "in": "query", "schema": {"type": "string"},
                                    "description": "comma-separated statuses"},
                                   {"name": "sweep", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json("JobPage", "a page of jobs"), **_errors(400)}},
        },
        "/jobs/{job_id}": {"get": {
            "operationId": "getJob", "summary": "Show a job", "parameters": [_id("job_id")],
            "responses": {"200": _json("JobPublic", "the job"), **_errors(404)}}},
        "/jobs/{job_id}/metrics": {"get": {
            "operationId": "getJobMetrics", "summary": "Learning curve, one row per epoch",
            "parameters": [_id("job_id"), {"name": "format", "in": "query",
                                           "schema": {"enum": ["json", "csv"]}}],
            "responses": {"200": {"description": "the epochs", "content": {
                "application/json": {"schema": _ref("MetricsPublic")},
                "text/csv": {"schema": {"type": "string"}}}}, **_errors(400, 404)}}},
        "/jobs/{job_id}/cancel": {"post": {
            "operationId": "cancelJob", "summary": "Cancel a job", "parameters": [_id("job_id")],
            "responses": {"202": _json("JobPublic", "cancelled, or stopping at its next epoch"),
                          **_errors(404, 409)}}},
        "/sweeps": {
            "post": {"operationId": "createSweep", "summary": "Submit a sweep",
                     "requestBody": sweep_body,
                     "responses": {"201": _json("SweepPublic", "the sweep, first trials queued"),
                                   **_errors(400, 413, 415, 422, 503)}},
            "get": {"operationId": "listSweeps", "summary": "List sweeps (newest first)",
                    "parameters": [*PAGE, {"name": "status", "in": "query",
                                           "schema": {"type": "string"}}],
                    "responses": {"200": _json("SweepPage", "a page of sweeps"), **_errors(400)}},
        },
        "/sweeps/{sweep_id}": {"get": {
            "operationId": "getSweep", "summary": "Show a sweep with its leaderboard",
            "parameters": [_id("sweep_id")],
            "responses": {"200": _json("SweepPublic", "the sweep"), **_errors(404)}}},
        "/sweeps/{sweep_id}/trials": {"get": {
            "operationId": "listTrials", "summary": "List a sweep's trials",
            "parameters": [_id("sweep_id"), *PAGE,
                           {"name": "status", "in": "query", "schema": {"type": "string"},
                            "description": "comma-separated statuses"}],
            "responses": {"200": _json("JobPage", "a page of trials"), **_errors(400, 404)}}},
        "/sweeps/{sweep_id}/cancel": {"post": {
            "operationId": "cancelSweep", "summary": "Cancel a sweep",
            "parameters": [_id("sweep_id")],
            "responses": {"202": _json("SweepPublic", "the cancelled sweep"),
                          **_errors(404, 409)}}},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "sweeplab", "version": "1", "description":
                 "Train feed-forward networks with sweeplab's NumPy trainer: jobs and sweeps."},
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {"schemas": schemas},
    }  # fmt: skip


@bp.get("/openapi.json")
def openapi_json():
    """Serve the OpenAPI document."""
    return openapi_document()
