"""Shared fixtures: helpers importable from the repo root, TF quiet, a private project home."""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def project_home(tmp_path, monkeypatch):
    """Every test gets its own CNNVIS_HOME, so nothing touches the repository's data/ or outputs/."""
    monkeypatch.setenv("CNNVIS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CNNVIS_QUICK", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A small toy-pets set (8 train + 4 validation per class, 64 px) shared by the session."""
    import helpers

    return helpers.make_toy_pets(tmp_path_factory.mktemp("toy") / "pets", n_train=8, n_val=4, size=64)
