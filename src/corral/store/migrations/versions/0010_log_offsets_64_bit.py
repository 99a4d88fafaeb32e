"""Shipped log chunks' end offsets as 64-bit integers: a pod's output may pass 2 GiB (PostgreSQL's
INTEGER), however much of it the cap keeps.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_chunks") as batch:
        batch.alter_column("end", type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("log_chunks") as batch:
        batch.alter_column("end", type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=False)
