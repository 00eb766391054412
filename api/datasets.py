"""/api/v1/datasets: upload (CSV, NPY, NPZ, JSON), list, show, delete."""

from __future__ import annotations

from typing import Any, Literal

from flask import request, url_for
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from api.auth import SECURITY
from api.context import db, no_content, principal, reply, services
from api.errors import APIError
from api.jobs import bad_cursor, errors, iso_time
from api.params import CursorQuery
from services import datasets
from services.datasets import store
from services.db.models import Dataset
from services.db.pages import BadCursorError

bp = APIBlueprint("datasets", __name__, abp_tags=[Tag(name="datasets")], abp_security=SECURITY)

TASK = Literal["classification", "regression"]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetPath(BaseModel):
    dataset_id: str


class DatasetUploadQuery(BaseModel):
    """Options of a raw upload (a multipart upload may give them as form fields too)."""

    target: str | None = Field(
        None, description="the label column: a CSV header name, an NPY column index"
    )
    name: str | None = Field(None, max_length=200)
    task: TASK | None = Field(None, description="default: labels that are integers or text")
    format: Literal["csv", "npy", "npz", "json"] | None = Field(
        None, description="default: from the file name, the Content-Type, or the bytes"
    )


class DatasetListQuery(CursorQuery):
    """A page of datasets, newest first (a dataset has no status to filter by)."""


class DatasetLinks(Closed):
    self: str


class DatasetSummary(Closed):
    id: str
    name: str | None
    sha256: str = Field(description="the content hash of the stored (canonical) arrays")
    format: str = Field(description="the format it was uploaded in")
    task: TASK
    target: str | None
    n_rows: int
    n_features: int
    n_classes: int | None
    size_bytes: int = Field(description="the stored arrays' size")
    created_at: str | None
    links: DatasetLinks


class DatasetPublic(DatasetSummary):
    classes: list[Any] | None = Field(description="the label of each class, in class order")
    class_counts: list[int] | None = Field(description="the rows of each class")
    feature_names: list[str] | None = Field(description="a CSV's feature columns")


class DatasetPage(Closed):
    items: list[DatasetSummary]
    next_cursor: str | None


def _summary_fields(row: Dataset) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "sha256": row.sha256,
        "format": row.format,
        "task": row.task,
        "target": row.target,
        "n_rows": row.n_rows,
        "n_features": row.n_features,
        "n_classes": row.n_classes,
        "size_bytes": row.size_bytes,
        "created_at": iso_time(row.created_at),
        "links": DatasetLinks(self=url_for("datasets.get_dataset", dataset_id=row.id)),
    }


def dataset_public(row: Dataset) -> DatasetPublic:
    return DatasetPublic(
        **_summary_fields(row),
        classes=row.classes,
        class_counts=row.class_counts,
        feature_names=row.feature_names,
    )


def _dataset_or_404(dataset_id: str) -> Dataset:
    """Another user's dataset answers exactly as one that does not exist."""
    row = store.visible_dataset(db(), dataset_id, principal())
    if row is None:
        raise APIError(404, f"no dataset {dataset_id}")
    return row


def _upload(limit: int) -> tuple[bytes, str | None, dict[str, str]]:
    """The uploaded bytes, their file name, and the form's fields (a multipart
    upload's ``file``, or the raw body); 413 over ``limit`` bytes."""
    too_large = APIError(
        413, f"the dataset is larger than {limit} bytes (SWEEPLAB_MAX_DATASET_BYTES)"
    )
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise too_large
    request.max_content_length = limit + 64 * 1024  # the multipart envelope around the file
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise APIError(
                422,
                "no file in the upload",
                details=[{"loc": "file", "msg": "send the data as the form field 'file'"}],
            )
        data = upload.read(limit + 1)
        fields = {key: value for key, value in request.form.items() if value != ""}
        filename = upload.filename
    else:
        data, fields, filename = request.get_data(cache=False), {}, None
    if len(data) > limit:
        raise too_large
    return data, filename, fields


_FILE = {"type": "string", "format": "binary"}
_FORM_FIELD = {"type": "string"}
#: the request body of an upload, for the OpenAPI document (the route reads it itself):
#: a multipart form (Swagger UI's file picker) or the raw file
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {**_FILE, "description": "the CSV, NPY, NPZ or JSON file"},
                    "target": {**_FORM_FIELD, "description": "a CSV's target column"},
                    "name": {**_FORM_FIELD, "description": "a name to show"},
                    "task": {**_FORM_FIELD, "enum": ["classification", "regression"]},
                },
            }
        },
        "text/csv": {"schema": _FILE},
        "application/json": {"schema": {"type": "object"}},
        "application/octet-stream": {"schema": _FILE},
    },
}


@bp.post(
    "/datasets",
    operation_id="createDataset",
    summary="Upload a dataset (CSV, NPY, NPZ or JSON)",
    responses={200: DatasetPublic, 201: DatasetPublic, **errors(400, 413, 422)},
    openapi_extensions={"requestBody": UPLOAD_BODY},
)
def create_dataset(query: DatasetUploadQuery):
    """Check and store a dataset (yours), once per content: a multipart upload (field
    ``file``; ``target``, ``name``, ``task`` as fields or query arguments) or the raw
    body (Content-Type text/csv, application/json, application/octet-stream). 201 with
    the new dataset; 200 with the one you already have when the content is the same."""
    limit = services().settings.limits.max_dataset_bytes
    data, filename, fields = _upload(limit)
    options = {**query.model_dump(exclude_none=True), **fields}
    try:
        checked = DatasetUploadQuery.model_validate(options)
    except ValueError as err:
        raise APIError(422, "invalid upload options", details=_option_details(err)) from err
    fmt = checked.format or datasets.detect_format(request.mimetype, filename, data)
    table = datasets.parse(data, format=fmt, target=checked.target, task=checked.task)
    if len(datasets.canonical_bytes(table)) > limit:
        raise APIError(
            413,
            f"the dataset's arrays (X as float64) take more than {limit} bytes "
            "(SWEEPLAB_MAX_DATASET_BYTES)",
        )
    session = db()
    row, created = store.store_dataset(
        session, table, owner_id=principal().user_id, name=checked.name or filename
    )
    session.commit()
    headers = {"Location": url_for("datasets.get_dataset", dataset_id=row.id)}
    return reply(dataset_public(row), 201 if created else 200, headers)


def _option_details(err: Any) -> list[dict[str, str]]:
    return [
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
        for e in getattr(err, "errors", lambda: [])()
    ]


@bp.get(
    "/datasets",
    operation_id="listDatasets",
    summary="List datasets (newest first)",
    responses={200: DatasetPage, **errors(400)},
)
def list_datasets(query: DatasetListQuery):
    """List your datasets (an admin: everyone's), newest first: summaries."""
    try:
        rows, next_cursor = store.list_datasets(
            db(), owner_id=principal().owner_filter, cursor=query.cursor, limit=query.limit
        )
    except BadCursorError as err:
        raise bad_cursor(err) from err
    items = [DatasetSummary(**_summary_fields(row)) for row in rows]
    return reply(DatasetPage(items=items, next_cursor=next_cursor))


@bp.get(
    "/datasets/<dataset_id>",
    operation_id="getDataset",
    summary="Show a dataset",
    responses={200: DatasetPublic, **errors(404)},
)
def get_dataset(path: DatasetPath):
    """Show a dataset's shape, task, classes and content hash."""
    return reply(dataset_public(_dataset_or_404(path.dataset_id)))


@bp.delete(
    "/datasets/<dataset_id>",
    operation_id="deleteDataset",
    summary="Delete a dataset",
    responses={204: None, **errors(404, 409)},
)
def delete_dataset(path: DatasetPath):
    """Delete a dataset (and its bytes, unless another user stored the same); 409
    while a queued or running job, or a running sweep, trains on it."""
    session = db()
    _dataset_or_404(path.dataset_id)
    try:
        store.delete_dataset(session, path.dataset_id)
    except store.DatasetInUseError as err:
        raise APIError(
            409,
            f"dataset {path.dataset_id} is used by a queued or running job, sweep or range test",
        ) from err
    session.commit()
    return no_content()
