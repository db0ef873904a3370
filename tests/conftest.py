"""Shared fixtures: the throwaway PostgreSQL cluster and the storage backends every
storage-facing test runs on."""

from __future__ import annotations

import os

# Keras is a test-only reference for schedule formulas; it must run on torch, not TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "torch")
