"""The shape of the code: public APIs are what ``__all__`` says, the leaves import no
transport framework, and the tree passes ruff (with the ASYNC rules)."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "routers", "wrappers", "explain")
LEAVES = (
    "protos.errors", "protos.protocol", "protos.codecs.json", "protos.codecs.binary",
    "protos.codecs.grpc", "protos.codecs.raw", "gateway.config", "protos.registry",
    "gateway.decisions", "routers", "wrappers.target", "wrappers.batching",
)


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    for exported in getattr(module, "__all__", ()):
        assert hasattr(module, exported), f"{name}.__all__ names missing {exported!r}"


def test_leaves_import_no_transport() -> None:
    code = (
        f"import sys; import {', '.join(LEAVES)}; "
        "print(sorted(m for m in ('aiohttp', 'grpc') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff is not None, "ruff is a test dependency"
    result = subprocess.run([ruff, "check", "."], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout


def test_imports_point_down() -> None:
    """The layers in pyproject.toml ([tool.importlinter]): protos is the ground floor,
    routers, wrappers and explain sit on it, gateway on top."""
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert linter is not None, "import-linter is a test dependency"
    result = subprocess.run([linter, "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_import_cycles() -> None:
    """No two project modules import each other, directly or through others (function-
    level imports included)."""
    import graphlib

    import grimp

    graph = grimp.build_graph("protos", "routers", "wrappers", "explain", "gateway",
                              cache_dir=None)
    sorter = graphlib.TopologicalSorter(
        {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    )
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
