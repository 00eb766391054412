"""Learning-rate range tests: a job spec's test run by a worker, its curve and reading.

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-04 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lr_range_tests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32)),
        sa.Column("name", sa.String(200)),
        sa.Column("experiment", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("min_lr", sa.Float(), nullable=False),
        sa.Column("max_lr", sa.Float(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("smoothing", sa.Float(), nullable=False),
        sa.Column("diverge_factor", sa.Float(), nullable=False),
        sa.Column("result", sa.JSON()),
        sa.Column("suggested_lr", sa.Float()),
        sa.Column("divergence_lr", sa.Float()),
        sa.Column("error", sa.Text()),
        sa.Column("worker", sa.String(200)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("seconds", sa.Float()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("mlflow_experiment_id", sa.String(64)),
        sa.Column("mlflow_synced_status", sa.String(16)),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lr_range_tests")),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_lr_range_tests_owner_id_users"),
            ondelete="SET NULL",
        ),
    )
    op.create_index(op.f("ix_lr_range_tests_owner_id"), "lr_range_tests", ["owner_id"])
    op.create_index(op.f("ix_lr_range_tests_status"), "lr_range_tests", ["status"])
    op.create_index(op.f("ix_lr_range_tests_created_at"), "lr_range_tests", ["created_at"])


def downgrade() -> None:
    op.drop_table("lr_range_tests")
