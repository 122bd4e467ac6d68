"""Helm and kubernetes-validate helpers for the chart tests.

Helm comes from ``.ci/install-helm.sh`` (cached in ``.cache/bin``), so the tests
need only npm on a fresh machine. Rendered manifests are checked with
``kubernetes-validate --strict`` against :data:`KUBERNETES_VERSION`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
MODEL_CHART = CHARTS / "model"
GATEWAY_CHART = CHARTS / "gateway"
EXAMPLES = CHARTS / "examples"
INSTALL_HELM = REPO / ".ci" / "install-helm.sh"
KUBERNETES_VERSION = "1.30.0"

Manifest = dict[str, Any]


class HelmError(RuntimeError):
    """``helm`` exited non-zero; the message is its stderr."""


@dataclass(frozen=True, slots=True)
class Helm:
    """A Helm v3 binary with the few commands the tests use."""

    binary: Path

    def run(self, *args: str, stdin: str | None = None) -> str:
        """Run ``helm ARGS``; return stdout or raise :class:`HelmError` with stderr."""
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(REPO / ".cache" / "helm"),
            "HELM_CONFIG_HOME": str(REPO / ".cache" / "helm"),
            "HELM_DATA_HOME": str(REPO / ".cache" / "helm"),
        }
        proc = subprocess.run(
            [str(self.binary), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise HelmError(proc.stderr + proc.stdout)
        return proc.stdout

    def template(
        self,
        chart: Path,
        release: str,
        values_files: Iterable[Path] = (),
        values: Mapping[str, Any] | None = None,
    ) -> str:
        """``helm template``: the rendered manifests as one YAML string.

        ``values`` (merged last, after ``values_files``) is passed on stdin as JSON,
        so types are exact (no ``--set`` string coercion).
        """
        return self.run(
            "template",
            release,
            str(chart),
            *_values_args(values_files, values),
            stdin=json.dumps(values) if values is not None else None,
        )

    def render(
        self,
        chart: Path,
        release: str,
        values_files: Iterable[Path] = (),
        values: Mapping[str, Any] | None = None,
    ) -> list[Manifest]:
        """``helm template`` parsed into a list of objects (empty documents dropped)."""
        text = self.template(chart, release, values_files, values)
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def lint(
        self,
        chart: Path,
        values_files: Iterable[Path] = (),
        values: Mapping[str, Any] | None = None,
    ) -> str:
        """``helm lint --strict``; raises :class:`HelmError` on any finding."""
        return self.run(
            "lint",
            "--strict",
            str(chart),
            *_values_args(values_files, values),
            stdin=json.dumps(values) if values is not None else None,
        )


def _values_args(files: Iterable[Path], values: Mapping[str, Any] | None) -> list[str]:
    args = [arg for path in files for arg in ("-f", str(path))]
    return args + (["-f", "-"] if values is not None else [])


def kubernetes_validate(manifests: str) -> list[str]:
    """Run ``kubernetes-validate --strict`` on a YAML stream; return its ERROR/WARN lines.

    Uses the CLI of the kubernetes-validate package (``python -m kubernetes_validate``)
    so the check is the same one a person runs by hand on ``helm template`` output.
    """
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "-k",
            KUBERNETES_VERSION,
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if proc.returncode != 0 and not problems:
        problems = [f"kubernetes-validate exited {proc.returncode}"]
    return problems


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    """All objects of one kind."""
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    """The single object of one kind (fails when there are none or several)."""
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(manifests: list[Manifest], name: str) -> dict[str, Any]:
    """The named container of the chart's Deployment."""
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


def flags(args: list[str]) -> dict[str, str]:
    """Flags after the subcommand: ``["sub", "--a", "1"]`` -> ``{"--a": "1"}``."""
    rest = args[1:]
    assert len(rest) % 2 == 0 and all(k.startswith("--") for k in rest[::2]), args
    return dict(zip(rest[::2], rest[1::2], strict=True))
