"""Session fixtures shared by every suite: the credit models (trained once) and the
three real wrapper pods serving them (scikit-learn, ONNX Runtime, PyTorch), each a real
:class:`~protos.server.app.Server` on port 0 in its own thread.

``tests/wrappers/conftest.py`` and ``tests/examples/conftest.py`` define twin
``credit_models`` fixtures that train into the same folder, so a session trains once.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from examples.credit.encoding import load_frame
from examples.credit.train import artifact_paths, train
from tests.fakes import model_pod
from tests.postgres import PostgresServer, postgres_available
from tests.servers import ServerThread
from wrappers.loader import wrapper_from_settings
from wrappers.settings import load_settings


@pytest.fixture(scope="session")
def credit_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifact key -> path (see ``examples.credit.train.train``), trained once."""
    out = tmp_path_factory.getbasetemp() / "credit-models"
    if (out / "metrics.json").exists():
        return artifact_paths(out)
    return train(out, seed=0)


@pytest.fixture(scope="session")
def holdout_x(credit_models: dict[str, Path]) -> np.ndarray:
    """Encoded held-out rows, FP32 [200, 20]."""
    return load_frame(credit_models["holdout"])[0]


def _credit_pod(credit_models: dict[str, Path], key: str) -> Iterator[ServerThread]:
    settings = load_settings(credit_models[f"{key}_settings"])
    with ServerThread(model_pod(wrapper_from_settings(settings), settings)) as pod:
        yield pod


@pytest.fixture(scope="session")
def lr_pod(credit_models: dict[str, Path]) -> Iterator[ServerThread]:
    """``credit-lr`` (scikit-learn, version 1) served over REST and gRPC."""
    yield from _credit_pod(credit_models, "lr")


@pytest.fixture(scope="session")
def gbm_pod(credit_models: dict[str, Path]) -> Iterator[ServerThread]:
    """``credit-gbm`` (ONNX Runtime, version 1) served over REST and gRPC."""
    yield from _credit_pod(credit_models, "gbm")


@pytest.fixture(scope="session")
def mlp_pod(credit_models: dict[str, Path]) -> Iterator[ServerThread]:
    """``credit-mlp`` (TorchScript, version 1) served over REST and gRPC."""
    yield from _credit_pod(credit_models, "mlp")


REQUIRE_POSTGRES_ENV = "ARBITER_REQUIRE_POSTGRES"
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (see ``tests/postgres.py``).

    Skips when the server binaries are missing, or fails when ``ARBITER_REQUIRE_POSTGRES=1``
    (as in CI, which must never skip the PostgreSQL tests silently).
    """
    require_postgres()
    with PostgresServer() as server:
        yield server


def require_postgres() -> None:
    """Skip the calling test (or fixture) when a PostgreSQL server cannot be started
    here; fail it instead with ``ARBITER_REQUIRE_POSTGRES=1``."""
    problem = postgres_available()
    if problem is not None:
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"{problem} ({REQUIRE_POSTGRES_ENV}=1)")
        pytest.skip(problem)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """DSN of a fresh, empty database of its own for this test on ``postgres_server``."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())
    return postgres_server.create_database(f"t{next(_database_numbers)}_{slug}"[:63])
