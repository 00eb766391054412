"""Sweeps whose learning rate takes its bounds from a range test: the test, the bounds.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-04 16:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("range_test_id", sa.String(32)))
        batch.add_column(sa.Column("range_bounds", sa.JSON()))
        batch.create_foreign_key(
            op.f("fk_sweeps_range_test_id_lr_range_tests"),
            "lr_range_tests",
            ["range_test_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_sweeps_range_test_id"), ["range_test_id"])


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_index(op.f("ix_sweeps_range_test_id"))
        batch.drop_constraint(op.f("fk_sweeps_range_test_id_lr_range_tests"), type_="foreignkey")
        batch.drop_column("range_bounds")
        batch.drop_column("range_test_id")
