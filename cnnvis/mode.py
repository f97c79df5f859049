"""Quick mode: CI's small, fast run of every notebook (CNNVIS_QUICK=1)."""

from __future__ import annotations

import os

QUICK_ENV = "CNNVIS_QUICK"


def quick_mode() -> bool:
    """True when CNNVIS_QUICK is set to a true value (1/true/yes/on)."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def quick_or_full(quick, full):
    """`quick` in quick mode, else `full`: one place for CI-sized settings."""
    return quick if quick_mode() else full
