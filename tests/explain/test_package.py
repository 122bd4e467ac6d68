"""The explain package's public API is what ``__all__`` says, and importing it is cheap."""

from __future__ import annotations

import subprocess
import sys

import explain


def test_all_names_exist():
    assert sorted(explain.__all__) == sorted(set(explain.__all__))
    for name in explain.__all__:
        assert getattr(explain, name) is not None


def test_import_does_not_load_alibi():
    code = "import sys, explain, explain.worker; print('alibi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
