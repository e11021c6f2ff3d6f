"""where a generation ran: the worker, its node and its region (kept after the job ends)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("worker", sa.String(64), nullable=True))
        batch.add_column(sa.Column("worker_node", sa.String(64), nullable=True))
        batch.add_column(sa.Column("worker_region", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("worker_region")
        batch.drop_column("worker_node")
        batch.drop_column("worker")
