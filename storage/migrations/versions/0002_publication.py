"""Who refreshes a study's dashboard pages, and when they last did.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps_publication",
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("studies.study_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("published_at", sa.Float()),
        sa.Column("publishing_until", sa.Float()),
    )


def downgrade() -> None:
    op.drop_table("sweeps_publication")
