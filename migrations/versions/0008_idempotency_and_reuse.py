"""Idempotency keys of POST requests; a job's fingerprint (reuse of an identical
succeeded run) and the job it reused; a sweep's trials to run again (resume).

Chained on 0010, the newest revision on main when it was written (0008 was reserved
for it; 0010 landed first).

Revision ID: 0008
Revises: 0010
Create Date: 2026-12-04 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
        sa.UniqueConstraint("owner", "scope", "key", name="uq_idempotency_keys_owner_scope_key"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64)))
        batch.add_column(sa.Column("reused_from", sa.String(32)))
        batch.create_index("ix_jobs_fingerprint", ["fingerprint"])
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("replays", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("replays")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_fingerprint")
        batch.drop_column("reused_from")
        batch.drop_column("fingerprint")
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
