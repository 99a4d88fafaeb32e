"""A pod's port is chosen where it runs and reported when it starts: kept with its placement. A
replica's own port becomes optional (set only for replicas whose port the controller chose).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("placements") as batch:
        batch.add_column(sa.Column("port", sa.Integer(), nullable=True))
    with op.batch_alter_table("service_replicas") as batch:
        batch.alter_column("port", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE service_replicas SET port = 0 WHERE port IS NULL")
    with op.batch_alter_table("service_replicas") as batch:
        batch.alter_column("port", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("placements") as batch:
        batch.drop_column("port")
