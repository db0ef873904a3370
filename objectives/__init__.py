"""Training objectives: tasks (`Task`: a model, data, loss and metric that lr-sweeps trains,
stacks and resumes; the built-in ones are tasks too) and user functions
``def fn(run) -> float`` that run their own loop.

fn = objectives.resolve("digits_mlp")       # or "package.module:Task" or "package.module:fn"
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from objectives.args import arg_errors, with_defaults
from objectives.builtin import ClassifierTask, digits_cnn, digits_mlp, tiny_lm
from objectives.task import BatchSource, Task
from objectives.trunks import Branch, Trunk
from schedules import Param

if TYPE_CHECKING:
    from objectives.command import Command, CommandFailed, CommandPool
    from objectives.data import Split
    from objectives.run import Diverged, HandBack, Lost, Outcome, Run, outcome_of, report_all
    from objectives.train import Pool, Stack, stack_key, train_stack

# What needs torch is imported on first use (PEP 562), so the commands that only check a
# config or read a study (`validate`, `launch`, `status`, ...) start without torch.
_LAZY = {
    **dict.fromkeys(
        ["Diverged", "HandBack", "Lost", "Outcome", "Run", "outcome_of", "report_all"],
        "objectives.run",
    ),
    **dict.fromkeys(["Pool", "Stack", "stack_key", "train_stack"], "objectives.train"),
    **dict.fromkeys(["Command", "CommandFailed", "CommandPool"], "objectives.command"),
    "Split": "objectives.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'objectives' has no attribute {name!r}")


Objective = Callable[["Run"], float]

BUILTIN: dict[str, Objective] = {
    "digits_mlp": digits_mlp,
    "digits_cnn": digits_cnn,
    "tiny_lm": tiny_lm,
}


class ObjectiveNotFound(ValueError):
    """The config's ``objective`` names nothing importable."""


def resolve(name: str | Mapping[str, Any]) -> Objective | Command:
    """A built-in task by name, or a user's given as ``package.module:name``: a `Task`
    subclass (instantiated without arguments), a `Task`, or a function ``fn(run)``; or a
    training script: a mapping with ``command`` (`objectives.command.Command`'s arguments).

    The current directory is importable, as with ``python -m``: a config next to your code
    can name ``mymodule:objective``.

    Raises:
        ObjectiveNotFound: unknown built-in, bad format, module or function missing.
    """
    if not isinstance(name, str):
        from objectives.command import Command

        return Command(**name)
    if name in BUILTIN:
        return BUILTIN[name]
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ObjectiveNotFound(
            f"objective: {name!r} is neither a built-in task ({', '.join(BUILTIN)}) "
            "nor 'package.module:function'; a training script goes in as "
            "objective: {command: ...}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not (module_name + ".").startswith(e.name + "."):
            raise ObjectiveNotFound(_import_failed(module_name, e)) from None
        raise ObjectiveNotFound(f"objective: cannot import {module_name!r}: {e}") from None
    except Exception as e:  # the user's module itself fails: say how, in one line
        raise ObjectiveNotFound(_import_failed(module_name, e)) from None
    fn: Any = getattr(module, attr, None)
    module_class = getattr(sys.modules.get("torch.nn"), "Module", None)
    if isinstance(fn, type) and module_class is not None and issubclass(fn, module_class):
        raise ObjectiveNotFound(
            f"objective: {name} is a torch nn.Module, not an objective; name an "
            "objectives.Task whose model(args) builds it, or a function fn(run) -> float"
        )
    if isinstance(fn, type) and issubclass(fn, Task):
        try:
            fn = fn()
        except Exception as e:
            raise ObjectiveNotFound(
                f"objective: {name}() failed: {type(e).__name__}: {e}"
            ) from None
    if not callable(fn):
        raise ObjectiveNotFound(f"objective: {module_name!r} has no function {attr!r} (or Task)")
    objective: Objective = fn
    return objective


def _import_failed(module_name: str, error: BaseException) -> str:
    """One line: what the module raised, where (``buggy.py:12``), and what caused it (a
    library that wraps the real error, as transformers' lazy imports do, hides it)."""
    from storage import one_line

    def shown(e: BaseException) -> str:  # the user's message in full, not only its first line
        return one_line(e, whole=True, limit=300)

    line = f"objective: importing {module_name!r} failed: {shown(error)}"
    where = _where(error)
    if where:
        line += f" ({where})"
    cause = _root_cause(error)
    if cause is not None:
        line += f"; caused by {shown(cause)}"
    return line


def _where(error: BaseException) -> str | None:
    """The innermost line of the user's own code in ``error``'s traceback (outside the
    standard library and installed packages), else the innermost line of any file; as
    ``file:line``, relative to the current directory when under it. A SyntaxError's
    message says where already."""
    if isinstance(error, SyntaxError):
        return None
    frames = [
        f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<")
    ]
    if not frames:
        return None
    libraries = {sysconfig.get_path(p) for p in ("stdlib", "platstdlib", "purelib", "platlib")}
    own = [f for f in frames if not any(f.filename.startswith(lib) for lib in libraries)]
    frame = (own or frames)[-1]
    path = os.path.abspath(frame.filename)
    if path.startswith(os.getcwd() + os.sep):
        path = os.path.relpath(path)
    return f"{path}:{frame.lineno}"


def _root_cause(error: BaseException) -> BaseException | None:
    """The innermost exception ``error`` was raised from or while handling (a few deep)."""
    cause = None
    seen = {id(error)}
    while True:
        nxt = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if nxt is None or id(nxt) in seen or len(seen) > 16:
            return cause
        seen.add(id(nxt))
        cause = error = nxt


def cannot_stack(name: str | Mapping[str, Any]) -> str | None:
    """Why the objective ``name`` trains one trial at a time even when asked to stack, or
    None: tasks (`Task`) stack, functions that run their own loop and commands do not. (A
    task whose model vmap cannot batch is found when a worker probes it, `Pool`.)"""
    if not isinstance(name, str):
        return (
            "a command trial cannot be stacked (its script runs its own loop; a worker with "
            "--gpus runs one trial per objective.processes GPUs at once)"
        )
    if isinstance(resolve(name), Task):
        return None
    return f"objective {name} cannot be stacked (it runs its own loop; an objectives.Task stacks)"


__all__ = [
    "arg_errors",
    "BatchSource",
    "Branch",
    "BUILTIN",
    "cannot_stack",
    "Command",
    "CommandFailed",
    "CommandPool",
    "ClassifierTask",
    "Diverged",
    "HandBack",
    "Lost",
    "Objective",
    "outcome_of",
    "ObjectiveNotFound",
    "Outcome",
    "Param",
    "Pool",
    "Run",
    "report_all",
    "resolve",
    "Split",
    "Stack",
    "stack_key",
    "Task",
    "train_stack",
    "Trunk",
    "with_defaults",
]
