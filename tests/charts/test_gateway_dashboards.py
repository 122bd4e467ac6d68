"""charts/gateway's Grafana dashboard: off by default; when enabled, a valid ConfigMap
labelled for Grafana's dashboard sidecar holding dashboards/arbiter.json as it is; and
the console option reaches the gateway's loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.charts.rendering import (
    EXAMPLES,
    GATEWAY_CHART,
    Helm,
    HelmError,
    Manifest,
    by_kind,
    kubernetes_validate,
)

EXAMPLE = EXAMPLES / "gateway.yaml"
DASHBOARD = GATEWAY_CHART / "dashboards" / "arbiter.json"


def _render(helm: Helm, values: dict[str, Any] | None = None) -> list[Manifest]:
    return helm.render(GATEWAY_CHART, "credit-gateway", [EXAMPLE], values)


def _dashboard_maps(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in by_kind(manifests, "ConfigMap") if "arbiter.json" in m["data"]]


def test_no_dashboard_by_default(helm: Helm) -> None:
    assert _dashboard_maps(_render(helm)) == []


def test_dashboard_config_map_for_the_grafana_sidecar(helm: Helm) -> None:
    values = {"dashboards": {"enabled": True, "annotations": {"grafana_folder": "Arbiter"}}}
    manifests = _render(helm, values)
    (config_map,) = _dashboard_maps(manifests)
    metadata = config_map["metadata"]
    assert metadata["name"] == "credit-gateway-arbiter-gateway-dashboards"
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["annotations"] == {"grafana_folder": "Arbiter"}
    shipped = json.loads(config_map["data"]["arbiter.json"])
    assert shipped == json.loads(DASHBOARD.read_text())
    assert shipped["uid"] == "arbiter-gateway" and len(shipped["panels"]) > 20
    text = helm.template(GATEWAY_CHART, "credit-gateway", [EXAMPLE], values)
    assert kubernetes_validate(text) == []


def test_dashboard_labels_and_namespace_are_values(helm: Helm) -> None:
    values = {"dashboards": {"enabled": True, "labels": {"dashboards": "arbiter"},
                             "namespace": "monitoring"}}
    (config_map,) = _dashboard_maps(_render(helm, values))
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["dashboards"] == "arbiter"
    for bad in ({"dashboards": {"enabled": "yes"}}, {"dashboards": {"folder": "x"}},
                {"dashboards": {"namespace": "Not_A_Namespace"}}):
        try:
            _render(helm, bad)
        except HelmError:
            continue
        raise AssertionError(f"{bad} was accepted")


def test_console_option_reaches_the_gateway_loader(helm: Helm, tmp_path: Path) -> None:
    from gateway.config import load_config

    config = yaml.safe_load(EXAMPLE.read_text())["config"]
    manifests = _render(helm, {"config": {**config, "console": {"enabled": True}}})
    (rendered,) = [m for m in by_kind(manifests, "ConfigMap") if "gateway.yaml" in m["data"]]
    path = tmp_path / "gateway.yaml"
    path.write_text(rendered["data"]["gateway.yaml"])
    assert load_config(path).console.enabled is True
