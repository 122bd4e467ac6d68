"""Fixtures for the example tests: the credit models, trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.credit.train import artifact_paths, train


@pytest.fixture(scope="session")
def credit_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifact key -> path; trained into the session's base temp dir, shared with the
    twin fixture in tests/wrappers/conftest.py when both run in one session."""
    out = tmp_path_factory.getbasetemp() / "credit-models"
    if (out / "metrics.json").exists():
        return artifact_paths(out)
    return train(out, seed=0)
