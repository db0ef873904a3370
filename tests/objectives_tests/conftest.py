"""Training in float64 for the equivalence tests.

"A trial stacked trains as it would alone" is checked in float64. A batched kernel and an
unbatched one may round differently (which one is faster, and how it blocks its sums, depends
on the CPU: AVX2, AVX-512, AMX), and training amplifies a last-bit difference. In float32
that can outgrow any fixed tolerance; in float64 it stays far below 1e-9 after the tests' few
epochs, so a tolerance of 1e-9 (`equivalence.REL`) holds on every CPU and still catches a
mixed-up stack (`test_stacked.py` breaks a stack on purpose to show it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def float64() -> Iterator[None]:
    """Models, data and optimizer state in float64 for the test (torch's default dtype)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)
