"""Services: their specs, revisions and replicas (each replica is a job).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("stable_revision", sa.Integer, nullable=True),
        sa.Column("canary_revision", sa.Integer, nullable=True),
        sa.Column("token_digest", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_services_tenant_name", "services", ["tenant", "name"], unique=True)
    op.create_table(
        "service_revisions",
        sa.Column(
            "service_id", sa.String(40), sa.ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("model_path", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "service_replicas",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "service_id", sa.String(40), sa.ForeignKey("services.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_service_replicas_service_id", "service_replicas", ["service_id"])


def downgrade() -> None:
    op.drop_table("service_replicas")
    op.drop_table("service_revisions")
    op.drop_table("services")
