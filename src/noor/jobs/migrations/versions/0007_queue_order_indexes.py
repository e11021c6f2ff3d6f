"""indexes a claim reads the queue in, one per order the scheduling policies use, and one for fair share's usage

A claim finds the policy's first job over the whole queue by reading queued jobs in index order (fifo: oldest;
priority: the existing ix_generations_queue; sjf: shortest predicted; fair share: each tenant's oldest), a few
rows at a time, instead of sorting the oldest 256. Fair share's usage reads the jobs running now or finished
within its window. `id` ends each order: ties are broken exactly as `noor.scheduling` breaks them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_generations_queued_age", "generations", ["state", "created_at", "id"])
    op.create_index("ix_generations_queued_tenant", "generations", ["state", "tenant", "created_at", "id"])
    # a job without a prediction ranks as 0 s: first, on both databases (PostgreSQL puts NULLs last by default)
    eta = sa.text("eta_s NULLS FIRST") if op.get_bind().dialect.name == "postgresql" else "eta_s"
    op.create_index("ix_generations_queued_eta", "generations", ["state", eta, "created_at", "id"])
    op.create_index("ix_generations_finished", "generations", ["finished_at"])


def downgrade() -> None:
    for name in ("ix_generations_finished", "ix_generations_queued_eta", "ix_generations_queued_tenant",
                 "ix_generations_queued_age"):
        op.drop_index(name, "generations")
