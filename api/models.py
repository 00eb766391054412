"""/api/v1/jobs/<id>/weights and /predict: a job's trained network out, and its
predictions for rows in the data's raw units (``services.models``)."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import select
from sqlalchemy.orm import Session, load_only

from api.auth import SECURITY
from api.context import principal, reply, services
from api.errors import APIError
from api.jobs import errors
from api.params import JobPath
from services.db.models import Job
from services.models import (
    DataGoneError,
    NoWeightsError,
    TrainedModel,
    check_rows,
    job_model,
)
from services.specs import PredictRequest, PredictResponse

bp = APIBlueprint("models", __name__, abp_tags=[Tag(name="models")], abp_security=SECURITY)

NPZ = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


def _model(session: Session, job_id: str) -> TrainedModel:
    """The job's trained model: 404 if the user may not see the job, 409 without weights."""
    stmt = select(Job).options(load_only(Job.owner_id, Job.spec, raiseload=True))
    job = session.scalars(stmt.where(Job.id == job_id)).one_or_none()
    if job is None or not principal().sees(job):
        raise APIError(404, f"no job {job_id}")
    svc = services()
    try:
        return job_model(session, job, sessions=svc.read_sessions, settings=svc.settings)
    except NoWeightsError as err:
        raise APIError(409, str(err), code="no_weights") from err
    except DataGoneError as err:
        raise APIError(409, str(err), code="dataset_deleted") from err


@bp.get(
    "/jobs/<job_id>/weights",
    operation_id="getJobWeights",
    summary="A job's final weights, spec and data statistics, as an .npz file",
    responses={200: NPZ, **errors(404, 409)},
)
def get_weights(path: JobPath):
    """Download W1..Wn, b1..bn, the spec, the standardization statistics and the labels."""
    with services().read_sessions() as session:
        data = _model(session, path.job_id).npz_bytes()
    disposition = f'attachment; filename="job-{path.job_id}.npz"'
    return Response(
        data, mimetype="application/octet-stream", headers={"Content-Disposition": disposition}
    )


@bp.post(
    "/jobs/<job_id>/predict",
    operation_id="predictJob",
    summary="Predictions of a job's trained network for rows in raw feature units",
    responses={200: PredictResponse, **errors(404, 409, 422)},
)
def predict(path: JobPath, body: PredictRequest):
    """Answer labels (as the user gave them) and probabilities, or targets, for each row."""
    with services().read_sessions() as session:  # a read: never SQLite's write lock
        model = _model(session, path.job_id)
    result = model.predict(check_rows(body.rows, model.n_features))
    return reply(PredictResponse(job_id=path.job_id, **vars(result)))
