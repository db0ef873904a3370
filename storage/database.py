"""One study database: Optuna's storage and lr-sweeps' own tables on the same URL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage import schema
from storage._engine import SQLITE_BUSY_TIMEOUT_S, create_engine, tune_sqlite
from storage._url import mask_url
from storage.base import HOLDING, BaseDatabase, StorageError, StorageRefused, TrialReport
from storage.optuna_internals import ClaimAwareCache, models, set_intermediate_value
from storage.preflight import check_study_database
from storage.resilience import RetryingStorage, permanent_reason, retried
from storage.tables import Base, Budget, EpochPoint, Publication, StepPoint

if TYPE_CHECKING:
    from storage.trial_slots import TrialSlots


class Database(BaseDatabase):
    """The SQL backend (`storage.base`): Optuna's `RDBStorage` plus lr-sweeps' tables
    (budget, curves) on one SQLite or PostgreSQL URL.

    Opening it creates Optuna's schema and migrates ours. Every method opens its own session
    (threads may share a Database) and is retried through outages (`storage.resilience`):
    each is idempotent, so a retry after a lost acknowledgement stores nothing twice.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Without ``create`` (a command that only reads a study, or a worker), ``url`` must
        already be a study database (`storage.preflight`).

        Raises:
            StorageRefused: what ``url`` names is not a study database and must not become
                one, or the database refuses for good (`storage.resilience.permanent_reason`).
            StorageError: any other failure (the database may be unreachable for now).
        """
        self.url = url
        self.engine = create_engine(url)
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        try:
            check_study_database(self.engine, create=create)  # before anything is written
            if self.engine.dialect.name == "sqlite":
                # WAL is a property of the file, set by our engine; Optuna's needs the wait.
                engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
                with self.engine.connect():
                    pass
            with schema.creation_lock(self.engine):
                self.rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
                if self.engine.dialect.name == "sqlite":
                    tune_sqlite(self.rdb.engine)
                schema.upgrade(self.engine)
            # What workers and commands use: Optuna's storage, surviving outages. Inside,
            # the cache Optuna itself puts in front of an RDBStorage (finished trials are
            # read once), which a wrapper would otherwise lose.
            self.optuna: optuna.storages.BaseStorage = RetryingStorage(ClaimAwareCache(self.rdb))
        except sqlalchemy.exc.SQLAlchemyError as e:
            reason = permanent_reason(e)
            if reason is not None:
                raise StorageRefused(f"storage: {mask_url(url)}: {reason}") from e
            raise StorageError(f"storage {mask_url(url)}: {one_line(e)}") from e

    def close(self) -> None:
        """Close the pooled connections (the last one to an SQLite file folds its
        write-ahead log back into the file). The Database stays usable: it reconnects."""
        self.engine.dispose()
        self.rdb.engine.dispose()

    def trial_slots(self, study_id: int, *, retries: int, worker: str | None = None) -> TrialSlots:
        """The study's trial slots (`storage.trial_slots`), for a worker."""
        from storage.trial_slots import TrialSlots

        return TrialSlots(self, study_id, retries=retries, worker=worker)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Commit on success, roll back on error, always close; errors become StorageError."""
        session = Session(self.engine)
        try:
            yield session
            session.commit()
        except sqlalchemy.exc.SQLAlchemyError as e:
            session.rollback()
            raise StorageError(f"storage {mask_url(self.url)}: {first_line(e)}") from e
        finally:
            session.close()

    # Budget ------------------------------------------------------------------------------

    @retried
    def set_budget(self, study_id: int, trials: int) -> None:
        with self.session() as s:
            row = s.get(Budget, study_id)
            if row is None:
                s.add(Budget(study_id=study_id, trials=trials))
            else:
                row.trials = trials

    @retried
    def budget(self, study_id: int) -> tuple[int, int]:
        with self.session() as s:
            row = s.get(Budget, study_id)
            if row is None:
                raise StorageError(f"study {study_id} has no budget; was it launched by sweeps?")
            return row.trials, held_slots(s, study_id)

    # Dashboard pages ---------------------------------------------------------------------

    @retried
    def claim_publication(self, study_id: int, *, now: float, every: float, lease: float) -> bool:
        """Take the right to refresh the study's dashboard pages until ``now + lease``,
        unless another process holds it or they were refreshed less than ``every`` seconds
        ago. One conditional UPDATE."""
        until, last = Publication.publishing_until, Publication.published_at
        with self.session() as s:
            s.execute(self.insert_ignoring_duplicates(Publication), [{"study_id": study_id}])
            result = s.execute(
                update(Publication)
                .where(
                    Publication.study_id == study_id,
                    or_(until.is_(None), until < now),
                    or_(last.is_(None), last <= now - every),
                )
                .values(publishing_until=now + lease)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    @retried
    def end_publication(self, study_id: int, *, now: float) -> None:
        with self.session() as s:
            s.execute(
                update(Publication)
                .where(Publication.study_id == study_id)
                .values(published_at=now, publishing_until=None)
            )

    # Curves ------------------------------------------------------------------------------

    @retried
    def add_curves(
        self, trial_id: int, steps: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]]
    ) -> None:
        """Store curve points; points already stored are kept (a retried write is harmless)."""
        with self.session() as s:
            self._insert_curves(
                s,
                [{"trial_id": trial_id, **r} for r in steps],
                [{"trial_id": trial_id, **r} for r in epochs],
            )

    @retried
    def add_reports(self, reports: Sequence[TrialReport]) -> set[int]:
        """Store many trials' reports in one transaction: each one's intermediate value
        (through Optuna's own code, so Optuna reads it as ``trial.report`` wrote it) and its
        curve points. A stack reports all its trials after each epoch: one commit instead of
        two per trial.

        Returns:
            The ids of trials already finished (another worker failed them as stale):
            nothing is stored for those.
        """
        finished: set[int] = set()
        with self.session() as s:  # ours, not Optuna's thread-local one that its calls commit
            for r in reports:
                try:
                    set_intermediate_value(self.rdb, s, r.trial_id, r.epoch, r.value)
                except optuna.exceptions.UpdateFinishedTrialError:
                    finished.add(r.trial_id)
            kept = [r for r in reports if r.trial_id not in finished]
            self._insert_curves(
                s,
                [{"trial_id": r.trial_id, **p} for r in kept for p in r.steps],
                [
                    {
                        "trial_id": r.trial_id,
                        "epoch": r.epoch,
                        "value": r.value,
                        "val_loss": r.val_loss,
                    }
                    for r in kept
                ],
            )
        return finished

    def _insert_curves(
        self, s: Session, steps: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]]
    ) -> None:
        for table, rows in ((StepPoint, steps), (EpochPoint, epochs)):
            if rows:
                s.execute(self.insert_ignoring_duplicates(table), rows)

    def insert_ignoring_duplicates(self, table: type[Base] | type[models.BaseModel]) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    @retried
    def step_curve(self, trial_id: int) -> list[StepPoint]:
        with self.session() as s:
            rows = s.scalars(
                select(StepPoint).where(StepPoint.trial_id == trial_id).order_by(StepPoint.step)
            ).all()
            s.expunge_all()
            return list(rows)

    @retried
    def epoch_curve(self, trial_id: int) -> list[EpochPoint]:
        with self.session() as s:
            rows = s.scalars(
                select(EpochPoint)
                .where(EpochPoint.trial_id == trial_id)
                .order_by(EpochPoint.epoch)
            ).all()
            s.expunge_all()
            return list(rows)


def held_slots(s: Session, study_id: int) -> int:
    """How many of the study's trials hold a slot of its budget (`HOLDING`)."""
    held = s.scalar(
        select(func.count())
        .select_from(models.TrialModel)
        .where(models.TrialModel.study_id == study_id, models.TrialModel.state.in_(HOLDING))
    )
    return int(held or 0)


def first_line(error: BaseException) -> str:
    """An error's message in one line (a database driver's own, when wrapped), or its
    type's name when it has none: for log lines and one-line errors."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line(error: BaseException, *, whole: bool = False, limit: int | None = None) -> str:
    """``Type: first line of the message``; with ``whole``, every line of it joined (a
    user's own error, whose later lines may say what is wrong, where a database driver's
    carry the statement); cut to ``limit`` characters."""
    message = " ".join(str(error).split()) if whole else first_line(error)
    line = f"{type(error).__name__}: {message}"
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."
