"""Request models for jobs and sweeps, with the limits; the API's response models.
The OpenAPI schemas come from here.

Pydantic checks shape, types and limits; the trainer's ``parse_spec`` then
checks meaning (and fills defaults), so both front doors accept exactly the
trainer's format. Both kinds of failure become :class:`SpecValidationError`,
whose ``details`` name the field by dotted path.

    base     the strict base model, the limits in force, the trainer's names
    errors   SpecValidationError and pydantic's errors as dotted-path details
    job      the job spec models, validate_job, normalize_job, has_validation
    sweep    the sweep spec: parameters, objective, early stopping, check_sweep
    public   the response models
    predict  a trained job's predictions: request and answer
    lr_range a learning-rate range test: request and answers
"""

from services.specs.base import (
    ACTIVATIONS,
    DATASET_NAMES,
    INITIALIZER_NAMES,
    LIMITS_IN_FORCE,
    LOSS_NAMES,
    OBJECTIVE_METRICS,
    OPTIMIZER_NAMES,
    OUTPUT_ACTIVATIONS,
    SCHEDULE_NAMES,
    SEED_MAX,
    Strict,
)
from services.specs.errors import SpecValidationError, validation_error
from services.specs.job import (
    ArchitectureSpec,
    DatasetSpec,
    EarlyStoppingSpec,
    HyperparametersSpec,
    JobCreate,
    JobLimits,
    LayerSpec,
    LRScheduleSpec,
    count_parameters,
    has_validation,
    normalize_job,
    trainer_spec,
    validate_job,
)
from services.specs.lr_range import (
    MAX_STEPS,
    MIN_STEPS,
    CurvePoint,
    RangeTestCreate,
    RangeTestLinks,
    RangeTestPage,
    RangeTestPublic,
    RangeTestSummary,
)
from services.specs.predict import MAX_PREDICT_ROWS, PredictRequest, PredictResponse
from services.specs.public import (
    JOB_STATUS,
    LEADERBOARD_TOP,
    DivergenceCeiling,
    ErrorBody,
    ErrorDetail,
    ErrorResponse,
    JobLinks,
    JobPage,
    JobPublic,
    JobSummary,
    JobTimings,
    LeaderboardPage,
    LeaderboardRow,
    MetricRow,
    MetricsPublic,
    MlflowLinks,
    Progress,
    Public,
    SweepLinks,
    SweepObjective,
    SweepPage,
    SweepPublic,
    SweepRangeTest,
    SweepSummary,
    SweepTimings,
)
from services.specs.sweep import (
    EarlyStoppingPolicy,
    ObjectiveSpec,
    ParameterSpec,
    SweepCreate,
    apply_params,
    check_sweep,
    validate_sweep,
)

__all__ = [
    # base
    "ACTIVATIONS",
    "DATASET_NAMES",
    "INITIALIZER_NAMES",
    "LIMITS_IN_FORCE",
    "LOSS_NAMES",
    "OBJECTIVE_METRICS",
    "OPTIMIZER_NAMES",
    "OUTPUT_ACTIVATIONS",
    "SCHEDULE_NAMES",
    "SEED_MAX",
    "Strict",
    # errors
    "SpecValidationError",
    "validation_error",
    # job
    "ArchitectureSpec",
    "DatasetSpec",
    "EarlyStoppingSpec",
    "HyperparametersSpec",
    "JobCreate",
    "JobLimits",
    "LayerSpec",
    "LRScheduleSpec",
    "count_parameters",
    "has_validation",
    "normalize_job",
    "trainer_spec",
    "validate_job",
    # lr_range
    "MAX_STEPS",
    "MIN_STEPS",
    "CurvePoint",
    "RangeTestCreate",
    "RangeTestLinks",
    "RangeTestPage",
    "RangeTestPublic",
    "RangeTestSummary",
    # predict
    "MAX_PREDICT_ROWS",
    "PredictRequest",
    "PredictResponse",
    # sweep
    "EarlyStoppingPolicy",
    "ObjectiveSpec",
    "ParameterSpec",
    "SweepCreate",
    "apply_params",
    "check_sweep",
    "validate_sweep",
    # public
    "JOB_STATUS",
    "LEADERBOARD_TOP",
    "ErrorBody",
    "ErrorDetail",
    "ErrorResponse",
    "JobLinks",
    "JobPage",
    "JobPublic",
    "JobSummary",
    "JobTimings",
    "LeaderboardPage",
    "LeaderboardRow",
    "MetricRow",
    "MetricsPublic",
    "MlflowLinks",
    "Progress",
    "Public",
    "SweepLinks",
    "SweepObjective",
    "SweepPage",
    "DivergenceCeiling",
    "SweepRangeTest",
    "SweepPublic",
    "SweepSummary",
    "SweepTimings",
]
