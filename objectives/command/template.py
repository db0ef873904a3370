"""A command line with placeholders, expanded per trial.

``{name}`` is the trial's value of that parameter (``lr``, ``cosine.warmup_steps``,
``args.width``) or one of `ALWAYS`; ``{args}`` and ``{hf_args}`` stand alone as a list item
and expand to several. ``{{`` and ``}}`` are literal braces. An item whose placeholder names
a parameter this trial does not have (another family's) is left out: write such flags as
``--warmup={cosine.warmup_steps}``, in one item.

A command is never run through a shell: a string is split as a shell would split it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

ALWAYS = ("epochs", "seed", "trial", "checkpoint_dir", "port")
ARGS, HF_ARGS = "args", "hf_args"  # placeholders that expand to several items
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


class TemplateError(ValueError):
    """A command that cannot be expanded: bad quoting, an unknown placeholder, ..."""


def split(command: str | Sequence[str]) -> list[str]:
    """A command's items: a list as given, a string split as a shell would.

    Raises:
        TemplateError: unbalanced quotes, or an empty command.
    """
    if isinstance(command, str):
        try:
            items = shlex.split(command)
        except ValueError as e:
            raise TemplateError(f"cannot split it as a shell would: {e}") from None
    else:
        items = list(command)
    if not items:
        raise TemplateError("is empty; give the program and its arguments")
    return items


def placeholders(items: Sequence[str]) -> list[str]:
    """Every ``{name}`` in ``items``, in order.

    Raises:
        TemplateError: ``{args}``/``{hf_args}`` inside a longer item, or a lone brace.
    """
    names = []
    for item in items:
        for name in _fields(item):
            if name in (ARGS, HF_ARGS) and item != f"{{{name}}}":
                raise TemplateError(f"{{{name}}} must be a whole item, got {item!r}")
            names.append(name)
    return names


def check(items: Sequence[str], known: Collection[str]) -> None:
    """Raises `TemplateError` for a placeholder that names none of ``known`` or `ALWAYS`."""
    for name in placeholders(items):
        if name not in known and name not in ALWAYS and name not in (ARGS, HF_ARGS):
            shown = ", ".join([*ALWAYS, ARGS, HF_ARGS, *sorted(known)])
            raise TemplateError(f"{{{name}}} names no parameter; known: {shown}")


def expand(
    items: Sequence[str],
    values: Mapping[str, Any],
    *,
    many: Mapping[str, Callable[[], list[str]]],
) -> list[str]:
    """``items`` with each placeholder replaced by ``values``' entry (formatted by `text`);
    ``many[name]()`` gives the items a whole-item ``{name}`` expands to. An item naming
    what ``values`` lacks is left out."""
    out: list[str] = []
    for item in items:
        whole = item[1:-1] if item.startswith("{") and item.endswith("}") else None
        if whole is not None and whole in many:
            out += many[whole]()
            continue
        if any(name not in values for name in _fields(item)):
            continue
        out.append(
            _FIELD.sub(
                lambda m: "{" if m[0] == "{{" else "}" if m[0] == "}}" else text(values[m[1]]),
                item,
            )
        )
    return out


def text(value: Any) -> str:
    """A value as a command line carries it: floats exactly (``repr``: ``1e-05``, the same
    float when read back), the rest as ``str``."""
    return repr(value) if isinstance(value, float) else str(value)


def _fields(item: str) -> list[str]:
    names = [m[1] for m in _FIELD.finditer(item) if m[1] is not None]
    rest = _FIELD.sub("", item)
    if "{" in rest or "}" in rest:
        raise TemplateError(f"a lone brace in {item!r}; write {{{{ or }}}} for a literal one")
    return names
