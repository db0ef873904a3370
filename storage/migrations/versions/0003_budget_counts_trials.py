"""The budget counts trials by state (`storage.trial_slots`); the claim counter goes.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the table to drop a column and its CHECK constraint.
    with op.batch_alter_table("sweeps_budget", recreate="always") as table:
        table.drop_constraint("claimed_range", type_="check")
        table.drop_column("claimed")


def downgrade() -> None:
    with op.batch_alter_table("sweeps_budget", recreate="always") as table:
        table.add_column(sa.Column("claimed", sa.Integer(), nullable=False, server_default="0"))
        table.create_check_constraint("claimed_range", "claimed >= 0 AND claimed <= trials")
