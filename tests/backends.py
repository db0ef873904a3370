"""One study store of each backend, for the suite that runs the storage contract on all of
them (`storage_tests/test_backends.py`; the `backend` fixture in `conftest.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from storage import BaseDatabase


@dataclass
class Backend:
    """A fresh, empty study store (`storage.base.BaseDatabase`) of one backend."""

    url: str  # what a worker opens (`storage.open_database`), in this process or another
    db: BaseDatabase  # opened on ``url``
    launcher: BaseDatabase  # where studies are launched (a proxy's is its database's)
