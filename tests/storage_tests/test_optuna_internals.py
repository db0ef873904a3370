"""Optuna's private API is reached only through `storage.optuna_internals`, which checks that
each internal it relies on is still there and behaves as it did, and the Optuna versions
allowed are those it was tested with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import optuna
import pytest
from packaging.requirements import Requirement

from storage import optuna_internals
from storage.optuna_internals import SUPPORTED, OptunaInternalsChanged, check

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "storage" / "optuna_internals.py"

# Optuna's private modules, and the private names of its objects that lr-sweeps needs.
PRIVATE = re.compile(
    r"optuna(\.\w+)*\._\w+"
    r"|_CachedStorage|_without_commit|_get_prepared_new_trial|_build_frozen_trial"
    r"|_trial_id_to_study_id_and_number|_pop_waiting_trial_id"
    r"|\._(storage|study_id|trial_id|redis|prefix|backend)\b"
)


def test_the_installed_optunas_internals_are_what_the_adapter_relies_on() -> None:
    check()


def test_private_optuna_names_appear_only_in_the_adapter() -> None:
    sources = [
        p
        for package in ("schedules", "objectives", "sweeps", "storage", "bench", "tests")
        for p in (ROOT / package).rglob("*.py")
        if p != Path(__file__)  # which names them to break them
    ]
    assert ADAPTER in sources
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in sources
        if p != ADAPTER
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found, "use storage.optuna_internals instead:\n" + "\n".join(found)
    assert PRIVATE.search(ADAPTER.read_text())  # the pattern finds what it looks for


@pytest.mark.parametrize(
    ("owner", "name", "named"),
    [
        (optuna.storages.RDBStorage, "_get_prepared_new_trial", "_get_prepared_new_trial"),
        (optuna.storages.RDBStorage, "_set_trial_attr_without_commit", "_set_trial_attr"),
        (
            optuna.storages.RDBStorage,
            "_set_trial_intermediate_value_without_commit",
            "_set_trial_intermediate_value",
        ),
        (optuna.storages.RDBStorage, "_build_frozen_trial_from_trial_model", "_build_frozen"),
    ],
)
def test_a_changed_internal_fails_the_check_naming_it(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, named: str
) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(OptunaInternalsChanged) as raised:
        check()
    message = str(raised.value)
    assert named in message and f"optuna {optuna.__version__}" in message
    assert f"optuna{SUPPORTED}" in message and "\n" not in message


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_renamed_attribute_fails_the_check_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal read as an attribute: the Redis backend's client under another name."""
    from optuna.storages.journal import JournalRedisBackend

    init = JournalRedisBackend.__init__

    def renamed(self: JournalRedisBackend, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        self.client = self.__dict__.pop("_redis")

    monkeypatch.setattr(JournalRedisBackend, "__init__", renamed)
    with pytest.raises(OptunaInternalsChanged, match="JournalRedisBackend._redis"):
        check()


def test_only_the_tested_optuna_versions_are_allowed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optuna_req = next(r for r in map(Requirement, project["dependencies"]) if r.name == "optuna")
    assert str(optuna_req.specifier) == str(Requirement(f"optuna{SUPPORTED}").specifier)
    assert optuna_req.specifier.contains(optuna.__version__)
    assert optuna_internals.__doc__ and "SUPPORTED" in optuna_internals.__doc__
