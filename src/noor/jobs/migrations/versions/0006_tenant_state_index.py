"""an index for the per-tenant concurrency check: active jobs of a tenant counted from the index alone

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_generations_tenant_state", "generations", ["tenant", "state", "deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_generations_tenant_state", "generations")
