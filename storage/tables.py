"""lr-sweeps' own tables, beside Optuna's in the same database, keyed by Optuna's ids.

Created and migrated by alembic (`storage.schema`) under its own version table, so they
never interfere with Optuna's schema or its migrations. The migrations also declare foreign
keys to Optuna's ``studies``/``trials`` (deleting a study deletes its rows); these models
leave them out because Optuna's tables are not in this metadata.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Budget(Base):
    """The study's trial budget: how many trials end COMPLETE or PRUNED. Its row is also the
    lock under which a trial is claimed (`storage.trial_slots`)."""

    __tablename__ = "sweeps_budget"

    study_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trials: Mapped[int] = mapped_column(Integer)


class StepPoint(Base):
    """One (downsampled) optimizer step of a trial: lr, train loss, gradient norm."""

    __tablename__ = "sweeps_curve_steps"

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    lr: Mapped[float] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)


class EpochPoint(Base):
    """One epoch of a trial: the validation metric it reported, and the validation loss."""

    __tablename__ = "sweeps_curve_epochs"

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)


class Publication(Base):
    """Who refreshes a study's dashboard note and graphs: one process at a time (a lease
    until ``publishing_until``), at most every so often (``published_at``), so racing
    workers never interleave the chunks those pages are stored in."""

    __tablename__ = "sweeps_publication"

    study_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    published_at: Mapped[float | None] = mapped_column(Float)
    publishing_until: Mapped[float | None] = mapped_column(Float)
