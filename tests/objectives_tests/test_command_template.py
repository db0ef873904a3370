"""A command line's placeholders: checked against the space, expanded per trial."""

from __future__ import annotations

import pytest

from objectives.command import template
from objectives.command.template import TemplateError


def test_split_a_string_as_a_shell_would_and_keep_a_list() -> None:
    assert template.split("torchrun --nproc_per_node=2 'my train.py' --lr={lr}") == [
        "torchrun",
        "--nproc_per_node=2",
        "my train.py",
        "--lr={lr}",
    ]
    assert template.split(["python", "a b.py"]) == ["python", "a b.py"]
    with pytest.raises(TemplateError, match="No closing quotation"):
        template.split("python 'train.py")
    with pytest.raises(TemplateError, match="is empty"):
        template.split("  ")


def test_expand_writes_floats_exactly_and_leaves_out_other_families_items() -> None:
    items = ["train", "--lr={lr}", "--warmup={cosine.warmup_steps}", "{{raw}}", "{args}"]
    values = {"lr": 1e-05, "schedule": "step", "trial": 3}
    out = template.expand(items, values, many={"args": lambda: ["--a=1", "--b=2"]})
    assert out == ["train", "--lr=1e-05", "{raw}", "--a=1", "--b=2"]
    assert float(template.text(0.1 + 0.2)) == 0.1 + 0.2


def test_check_refuses_a_placeholder_that_names_no_parameter() -> None:
    template.check(["run", "--lr={lr}", "--out={checkpoint_dir}/{trial}", "{args}"], {"lr"})
    with pytest.raises(TemplateError, match=r"^\{lrr\} names no parameter; known: epochs"):
        template.check(["run", "--lr={lrr}"], {"lr"})


@pytest.mark.parametrize(
    ("item", "why"),
    [("--x={args}", "must be a whole item"), ("--x={lr", "a lone brace"), ("}", "a lone brace")],
)
def test_placeholders_malformed_items_are_refused(item: str, why: str) -> None:
    with pytest.raises(TemplateError, match=why):
        template.placeholders([item])
