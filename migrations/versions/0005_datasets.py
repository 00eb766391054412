"""Datasets: uploaded data stored once by content hash; jobs and sweeps name the one they use.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_blobs",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_dataset_blobs")),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32)),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("n_classes", sa.Integer()),
        sa.Column("classes", sa.JSON()),
        sa.Column("class_counts", sa.JSON()),
        sa.Column("feature_names", sa.JSON()),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_datasets_owner_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["sha256"], ["dataset_blobs.sha256"], name=op.f("fk_datasets_sha256_dataset_blobs")
        ),
        sa.UniqueConstraint("owner_id", "sha256", name=op.f("uq_datasets_owner_id_sha256")),
    )
    op.create_index(op.f("ix_datasets_owner_id"), "datasets", ["owner_id"])
    op.create_index(op.f("ix_datasets_sha256"), "datasets", ["sha256"])
    op.create_index(op.f("ix_datasets_created_at"), "datasets", ["created_at"])
    for table in ("jobs", "sweeps"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("dataset_id", sa.String(32)))
            batch.create_foreign_key(
                op.f(f"fk_{table}_dataset_id_datasets"),
                "datasets",
                ["dataset_id"],
                ["id"],
                ondelete="SET NULL",
            )
            batch.create_index(op.f(f"ix_{table}_dataset_id"), ["dataset_id"])


def downgrade() -> None:
    for table in ("jobs", "sweeps"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(op.f(f"ix_{table}_dataset_id"))
            batch.drop_constraint(op.f(f"fk_{table}_dataset_id_datasets"), type_="foreignkey")
            batch.drop_column("dataset_id")
    op.drop_index(op.f("ix_datasets_created_at"), table_name="datasets")
    op.drop_index(op.f("ix_datasets_sha256"), table_name="datasets")
    op.drop_index(op.f("ix_datasets_owner_id"), table_name="datasets")
    op.drop_table("datasets")
    op.drop_table("dataset_blobs")
