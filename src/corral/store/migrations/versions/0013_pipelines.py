"""Pipelines: runs, their step instances (job, cache key and its parts, outputs), and jobs' outputs.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_pipeline_runs_status", "pipeline_runs", ["status"])
    op.create_index("ix_pipeline_runs_tenant", "pipeline_runs", ["tenant"])
    op.create_table(
        "pipeline_steps",
        sa.Column(
            "run_id", sa.String(40), sa.ForeignKey("pipeline_runs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=True),
        sa.Column("key_parts", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("cache_reason", sa.Text(), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=True),
    )
    op.create_index("ix_pipeline_steps_cache_key", "pipeline_steps", ["cache_key"])
    op.create_table(
        "job_outputs",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_outputs")
    op.drop_table("pipeline_steps")
    op.drop_table("pipeline_runs")
