"""Budget slots and per-trial curves.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps_budget",
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("studies.study_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.CheckConstraint("claimed >= 0 AND claimed <= trials", name="claimed_range"),
    )
    op.create_table(
        "sweeps_curve_steps",
        sa.Column(
            "trial_id",
            sa.Integer(),
            sa.ForeignKey("trials.trial_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("train_loss", sa.Float()),
        sa.Column("grad_norm", sa.Float()),
    )
    op.create_table(
        "sweeps_curve_epochs",
        sa.Column(
            "trial_id",
            sa.Integer(),
            sa.ForeignKey("trials.trial_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("epoch", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("val_loss", sa.Float()),
    )


def downgrade() -> None:
    op.drop_table("sweeps_curve_epochs")
    op.drop_table("sweeps_curve_steps")
    op.drop_table("sweeps_budget")
