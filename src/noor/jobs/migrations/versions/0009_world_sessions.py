"""world sessions: one player's session with an interactive world model (noor.jobs.sessions)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from noor.jobs.generation import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "world_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("fps", sa.Integer(), nullable=False),
        sa.Column("max_seconds", sa.Integer(), nullable=False),
        sa.Column("start_image_key", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("cost_microcents", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("paid_microcents", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(64), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("token_expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_world_sessions_tenant", "world_sessions", ["tenant", "created_at"])
    op.create_index("ix_world_sessions_state", "world_sessions", ["state"])


def downgrade() -> None:
    op.drop_index("ix_world_sessions_state", "world_sessions")
    op.drop_index("ix_world_sessions_tenant", "world_sessions")
    op.drop_table("world_sessions")
