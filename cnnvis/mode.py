"""Quick mode: CI's small, fast run of every notebook (CNNVIS_QUICK=1)."""

from __future__ import annotations

import os

QUICK_ENV = "CNNVIS_QUICK"


def _flag(name: str) -> bool:
    """Whether the environment variable `name` is set to a true value (1/true/yes/on)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def quick_mode() -> bool:
    """True when CNNVIS_QUICK is set to a true value (1/true/yes/on)."""
    return _flag(QUICK_ENV)


def quick_or_full(quick, full):
    """`quick` in quick mode, else `full`: one place for CI-sized settings."""
    return quick if quick_mode() else full


OFFLINE_ENV = "CNNVIS_OFFLINE"


def offline_mode() -> bool:
    """True when CNNVIS_OFFLINE is set to a true value: this machine has no internet on purpose (an
    air-gapped machine, CI's Colab stand-in), so ImageNet weights are not even tried for."""
    return _flag(OFFLINE_ENV)


SEED_ENV = "CNNVIS_SEED"


def training_seed() -> int:
    """The seed the notebooks train with: CNNVIS_SEED (an integer), 0 when unset. Other seeds give
    other draws of the same training, which is how the notebooks' checked facts are shown to hold
    for any draw (bench/claims_spread.py)."""
    value = os.environ.get(SEED_ENV, "").strip() or "0"
    if not value.isdigit():
        raise ValueError(f"{SEED_ENV} must be a whole number >= 0, got {value!r}.")
    return int(value)
