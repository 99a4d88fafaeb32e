"""Where replicas run and how the gateway proves itself to them: the address each node's agent
reports (advertised, or the one it connects from), and each replica's own secret.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("address", sa.String(255), nullable=True))
    with op.batch_alter_table("service_replicas") as batch:
        batch.add_column(sa.Column("secret", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("service_replicas") as batch:
        batch.drop_column("secret")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("address")
