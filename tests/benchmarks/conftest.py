"""Fixtures for the benchmark tests: the credit models, trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.credit.train import train


@pytest.fixture(scope="session")
def credit_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained credit models directory (shared with the other suites' fixtures when
    they run in the same session)."""
    out = tmp_path_factory.getbasetemp() / "credit-models"
    if not (out / "metrics.json").exists():
        train(out, seed=0)
    return out
