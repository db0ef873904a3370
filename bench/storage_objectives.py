"""Objectives for bench/storage_backends.py: no training, so what is measured is bookkeeping."""

from __future__ import annotations

import time
from typing import Any


def trivial(run: Any) -> float:
    return float(run.params["lr"])


def sleepy(run: Any) -> float:
    """Half a second of waiting: many workers on 2 cores, without the cores being the limit."""
    time.sleep(0.5)
    return float(run.params["lr"])
