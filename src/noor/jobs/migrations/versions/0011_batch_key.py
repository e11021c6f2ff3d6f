"""batch key: a job's request shape (model, size, frames, steps, guidance, keyframes), so a claim can take the
queued jobs that run together with the one the policy put first (`noor.scheduling.batching`). Jobs queued before
this migration have none and run alone.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("batch_key", sa.String(200), nullable=True))
    # a batch's other jobs: the queued jobs of one key in the default policy's order (priority tiers, then age)
    op.create_index(
        "ix_generations_queued_batch", "generations", ["state", "batch_key", "priority", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_generations_queued_batch", "generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("batch_key")
