"""Reading a command trial's output: numbers in every form Python prints, JSON lines and
regular expressions, and the one line that says why a command failed."""

from __future__ import annotations

import math

import pytest

from objectives.command.output import (
    ErrorLine,
    OutputReader,
    Reading,
    ReportFormatError,
    compile_report,
    number,
)

NANOGPT = (
    r"(?:iter|step) (?P<step>\d+): (?:val loss (?P<value>\S+)|loss (?P<loss>\S+), lr (?P<lr>\S+))"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.61", 2.61),
        ("1e-05", 1e-05),
        ("-3.2E+01", -32.0),
        ("6.000000000000001e-04", 6.000000000000001e-04),
        ("12", 12.0),
        (".5", 0.5),
        ("2.61,", 2.61),  # a regex's \S+ took the comma
        ("Infinity", math.inf),
        ("-inf", -math.inf),
    ],
    ids=lambda v: str(v),
)
def test_number_python_and_json_forms_read_exactly(text: str, expected: float) -> None:
    assert number(text) == expected


def test_number_nan_reads_as_nan() -> None:
    value = number("nan")
    assert value is not None and math.isnan(value)


@pytest.mark.parametrize("text", ["1.2.3", "2.6abc", "loss", "", "0x10", "--1"])
def test_number_not_a_number_is_none_never_truncated(text: str) -> None:
    assert number(text) is None


def test_reader_json_lines_read_value_step_and_curve_point() -> None:
    reader = OutputReader()
    assert reader.read('{"step": 50, "value": 2.61}') == Reading(step=50, value=2.61)
    assert reader.read('{"step": 7, "lr": 1e-05, "loss": 3.5, "grad_norm": 0.5}') == Reading(
        step=7, lr=1e-05, loss=3.5, grad_norm=0.5
    )
    nan = reader.read('{"value": NaN}')
    assert nan is not None and nan.value is not None and math.isnan(nan.value)
    assert reader.read("step 50: val loss 2.61") is None
    assert reader.read('{"step": 50}') is None  # nothing to report
    # After a prefix, or a progress bar's cursor move (tqdm's, under an HF Trainer).
    assert reader.read('[rank0]: {"step": 5, "value": 1.5}') == Reading(step=5, value=1.5)
    assert reader.read('\x1b[A{"step": 5, "value": 1.5}') == Reading(step=5, value=1.5)
    assert reader.read("{not json") is None


def test_reader_regex_reads_a_scripts_own_format_with_exponents() -> None:
    reader = OutputReader(NANOGPT)
    assert reader.read("step 50: val loss 2.61") == Reading(step=50, value=2.61)
    assert reader.read("iter 3: loss 4.1234, lr 6e-05") == Reading(step=3, loss=4.1234, lr=6e-05)
    assert reader.read("[rank0]: step 9: val loss -3.2E+01") == Reading(step=9, value=-32.0)
    assert reader.read("compiling the model...") is None


def test_reader_a_step_that_is_no_count_makes_no_report() -> None:
    reader = OutputReader(r"step (?P<step>\S+): (?P<value>\S+)")
    assert reader.read("step 1.5: 2.0") is None


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"loss (\S+)", "needs a group (?P<value>"),
        (r"loss (?P<val>\S+)", "needs a group (?P<value>"),
        (r"(?P<value>\S+) (?P<epoch>\d+)", "unknown group 'epoch'"),
        (r"(?P<value>\S+", "not a regular expression"),
    ],
)
def test_compile_report_refuses_patterns_that_read_no_value(pattern: str, why: str) -> None:
    with pytest.raises(ReportFormatError, match="^" + __import__("re").escape(why)):
        compile_report(pattern)


def test_error_line_is_the_last_exception_without_rank_prefixes() -> None:
    line = ErrorLine()
    for text in [
        "step 10: val loss 2.1",
        "[rank1]: Traceback (most recent call last):",
        '[rank1]:   File "train.py", line 3, in <module>',
        "[rank1]: ValueError: bad batch",
        "E1207 12:00:00.123 torch/distributed/elastic/multiprocessing/api.py:874] failed",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "  exitcode  : 1 (pid: 1234)",
    ]:
        line.see(text)
    assert str(line) == "ValueError: bad batch"


def test_error_line_without_an_exception_is_the_last_line() -> None:
    line = ErrorLine()
    for text in ["starting", "out of data!", "   "]:
        line.see(text)
    assert str(line) == "out of data!"


def test_reader_a_line_no_json_parser_can_hold_is_no_report() -> None:
    reader = OutputReader(None)
    assert reader.read('{"value": ' * 60_000) is None  # nested past Python's stack
    assert reader.read('{"value": ' + "9" * 400 + "}") == Reading(value=math.inf)  # past floats
