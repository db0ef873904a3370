"""Storage URLs: which one to use, and how to show it without its password."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_URL = "sqlite:///sweeps.db"
ENV_VAR = "SWEEPS_STORAGE"
SUPPORTED = ("sqlite", "postgresql")


class StorageURLError(ValueError):
    """A storage URL that cannot be used; the message never contains its password."""


def resolve_url(given: str | None = None) -> str:
    """The storage URL to use: ``given`` (``--storage``), else ``$SWEEPS_STORAGE``, else the
    embedded SQLite default. Plain ``postgresql://`` means the psycopg 3 driver.

    Raises:
        StorageURLError: the URL is malformed or names an unsupported database.
    """
    url = given or os.environ.get(ENV_VAR) or DEFAULT_URL
    parsed = _parse(url)
    if parsed.get_backend_name() not in SUPPORTED:
        raise StorageURLError(
            f"storage: unsupported database {parsed.get_backend_name()!r} in "
            f"{mask_url(url)}; use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unparseable URLs are hidden whole)."""
    try:
        return _parse(url).render_as_string(hide_password=True)
    except StorageURLError:
        return "<unparseable storage URL>"


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise StorageURLError(
            "storage: not a database URL; use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB"
        ) from None
