"""Each router module's public API is exactly what its ``__all__`` says."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "routers",
    "routers.base",
    "routers.state",
    "routers.posterior",
    "routers.specs",
    "routers.bandit",
    "routers.weighted",
    "routers.shadow",
    "routers.champion_challenger",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_exactly_the_public_names_defined_here(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert all(hasattr(module, n) for n in exported)
    if name == "routers":
        return  # the package re-exports; checked by the line above
    defined = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == name
    }
    assert defined <= exported


def test_build_router_and_router_spec_are_exported() -> None:
    import routers

    assert {
        "build_router",
        "RouterSpec",
        "StateStore",
        "InMemoryStateStore",
        "Learning",
    } <= set(routers.__all__)
