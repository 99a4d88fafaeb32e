"""A waiting job's forecast: when it would start on private clusters, and what bursting would cost.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("forecast_start", sa.Float, nullable=True))
        batch.add_column(sa.Column("burst_cost_usd", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("burst_cost_usd")
        batch.drop_column("forecast_start")
