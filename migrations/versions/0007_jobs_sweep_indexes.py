"""Indexes for a sweep's reads: its trials by status (the counts every sweep read and
list shows) and by objective (the top of its leaderboard), without a scan of the trials.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 12:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_sweep_id_status_epochs_done", "jobs", ["sweep_id", "status", "epochs_done"]
    )
    op.create_index("ix_jobs_sweep_id_objective", "jobs", ["sweep_id", "objective"])


def downgrade() -> None:
    op.drop_index("ix_jobs_sweep_id_objective", table_name="jobs")
    op.drop_index("ix_jobs_sweep_id_status_epochs_done", table_name="jobs")
