"""money as integer micro-cents; metered and unmetered tenants

Float cents drifted (a balance read 4999.982268000002) and rounded away sub-cent prices on a sum of many.
Tenants: credits_cents (float) -> credits_microcents (bigint), and `metered` (an unmetered tenant is never
charged; existing tenants stay metered, as they were). Generations: price_cents (float) -> price_microcents, and
paid_microcents: what was taken from the credits, the exact amount a failure gives back (existing generations
with a price were paid in full: every tenant was metered).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TO_MICRO = "CAST(ROUND({column} * 1000000) AS BIGINT)"


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("credits_microcents", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("metered", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.execute(f"UPDATE tenants SET credits_microcents = {_TO_MICRO.format(column='credits_cents')}")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("credits_cents")

    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("price_microcents", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("paid_microcents", sa.BigInteger(), nullable=False, server_default="0"))
    micro = _TO_MICRO.format(column="price_cents")
    op.execute(f"UPDATE generations SET price_microcents = {micro}, paid_microcents = {micro}")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("price_cents")


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("price_cents", sa.Float(), nullable=False, server_default="0"))
    op.execute("UPDATE generations SET price_cents = price_microcents / 1000000.0")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("paid_microcents")
        batch.drop_column("price_microcents")

    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("credits_cents", sa.Float(), nullable=False, server_default="0"))
    op.execute("UPDATE tenants SET credits_cents = credits_microcents / 1000000.0")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("metered")
        batch.drop_column("credits_microcents")
