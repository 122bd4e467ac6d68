"""charts/gateway (arbiter-gateway): lint, Kubernetes schema validity, rendered
contents, and the rendered config file read by the gateway's own loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.rendering import (
    EXAMPLES,
    GATEWAY_CHART,
    Helm,
    HelmError,
    Manifest,
    by_kind,
    container,
    flags,
    kubernetes_validate,
    one,
)

EXAMPLE = EXAMPLES / "gateway.yaml"
GATEWAY_FLAGS = {"--config", "--http-port", "--grpc-port", "--drain-timeout-s"}
# The example without a PersistentVolumeClaim, so several replicas are allowed.
EPHEMERAL = {"persistence": {"enabled": False}}


def example_config() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())["config"]


@pytest.fixture(scope="module")
def manifests(helm: Helm) -> list[Manifest]:
    return helm.render(GATEWAY_CHART, "credit-gateway", [EXAMPLE])


def gateway_container(manifests: list[Manifest]) -> dict[str, Any]:
    return container(manifests, "gateway")


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    return one(manifests, "Deployment")["spec"]["template"]["spec"]


def rendered_config(manifests: list[Manifest]) -> str:
    return one(manifests, "ConfigMap")["data"]["gateway.yaml"]


def render_with(helm: Helm, values: dict[str, Any]) -> list[Manifest]:
    return helm.render(GATEWAY_CHART, "credit-gateway", [EXAMPLE], values)


# -- helm and kubernetes-validate ---------------------------------------------------------


def test_example_values_pass_strict_lint(helm: Helm) -> None:
    helm.lint(GATEWAY_CHART, [EXAMPLE])


def test_chart_without_models_fails_lint(helm: Helm) -> None:
    with pytest.raises(HelmError, match="config.models: Must have at least 1 properties"):
        helm.lint(GATEWAY_CHART)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="pvc"),
        pytest.param(
            EPHEMERAL | {"autoscaling": {"enabled": True}, "metrics": {"podAnnotations": False}},
            id="emptydir-hpa",
        ),
    ],
)
def test_render_is_valid_kubernetes(helm: Helm, values: dict[str, Any]) -> None:
    rendered = helm.template(GATEWAY_CHART, "credit-gateway", [EXAMPLE], values)
    assert kubernetes_validate(rendered) == []


# -- the gateway config -------------------------------------------------------------------


def test_config_map_holds_the_values_config(manifests: list[Manifest]) -> None:
    expected = example_config()
    state = expected.get("state", {})
    if state.get("kind") == "sqlite":  # the chart puts router state on the data volume
        state.setdefault("sqlite_path", "/var/lib/arbiter/router-state.sqlite")
    assert yaml.safe_load(rendered_config(manifests)) == expected


def test_config_is_accepted_by_the_gateway_loader(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    from gateway.config import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text(rendered_config(manifests))
    config = load_config(path)
    assert {key: (m.url, m.name) for key, m in config.models.items()} == {
        key: (m["url"], m["name"]) for key, m in example_config()["models"].items()
    }
    assert set(config.deployments) == {"credit", "credit-cc", "credit-shadow"}
    # Absolute, on the data volume: not rebased onto the (read-only) config folder.
    assert config.decisions.sqlite_path == Path("/var/lib/arbiter/decisions.sqlite")


def test_sqlite_router_state_defaults_onto_the_data_volume(helm: Helm, tmp_path: Path) -> None:
    from gateway.config import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text(rendered_config(render_with(helm, {"config": {"state": {"kind": "sqlite"}}})))
    assert load_config(path).state.sqlite_path == Path("/var/lib/arbiter/router-state.sqlite")
    with pytest.raises(HelmError, match=r"state.sqlite_path \(/tmp/s.sqlite\) must be inside"):
        render_with(helm, {"config": {"state": {"kind": "sqlite", "sqlite_path": "/tmp/s.sqlite"}}})


def test_extra_config_files_sit_beside_the_config(helm: Helm) -> None:
    rendered = render_with(helm, {"extraConfigFiles": {"encoding.json": '{"a": 1}'}})
    assert one(rendered, "ConfigMap")["data"]["encoding.json"] == '{"a": 1}\n'


def test_router_specs_parse(manifests: list[Manifest]) -> None:
    from pydantic import TypeAdapter

    from routers.specs import RouterSpec

    adapter: TypeAdapter[Any] = TypeAdapter(RouterSpec)
    deployments = yaml.safe_load(rendered_config(manifests))["deployments"]
    kinds = {name: adapter.validate_python(d["router"]).kind for name, d in deployments.items()}
    assert kinds == {
        "credit": "thompson",
        "credit-cc": "champion_challenger",
        "credit-shadow": "shadow",
    }


def config_schema() -> dict[str, Any]:
    import json

    schema = json.loads((GATEWAY_CHART / "values.schema.json").read_text())
    return schema["properties"]["config"]


def test_config_schema_fields_match_the_gateway_config() -> None:
    """values.schema.json names exactly the fields of gateway/config.py, so a key the
    gateway would reject fails at helm time and the schema does not drift."""
    from gateway.config import DecisionsSpec, DeploymentSpec, GatewayConfig, ModelRef, StateSpec

    schema = config_schema()["properties"]
    assert set(schema) == set(GatewayConfig.model_fields)
    assert set(schema["models"]["additionalProperties"]["properties"]) == set(ModelRef.model_fields)
    assert set(schema["deployments"]["additionalProperties"]["properties"]) == set(
        DeploymentSpec.model_fields
    )
    assert set(schema["decisions"]["properties"]) == set(DecisionsSpec.model_fields)
    assert set(schema["state"]["properties"]) == set(StateSpec.model_fields)


def test_schema_router_kinds_match_router_specs() -> None:
    import typing

    from routers.specs import RouterSpec

    union = typing.get_args(RouterSpec)[0]
    kinds = {
        typing.get_args(spec.model_fields["kind"].annotation)[0] for spec in typing.get_args(union)
    }
    router = config_schema()["properties"]["deployments"]["additionalProperties"]["properties"][
        "router"
    ]
    assert set(router["properties"]["kind"]["enum"]) == kinds


def test_config_path_is_the_mounted_config_map(manifests: list[Manifest]) -> None:
    config_flag = flags(gateway_container(manifests)["args"])["--config"]
    mounts = {m["name"]: m for m in gateway_container(manifests)["volumeMounts"]}
    directory, key = config_flag.rsplit("/", 1)
    assert mounts["config"]["mountPath"] == directory and mounts["config"]["readOnly"]
    assert key in one(manifests, "ConfigMap")["data"]
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == one(manifests, "ConfigMap")["metadata"]["name"]


def test_decision_log_defaults_onto_the_data_volume(helm: Helm) -> None:
    config = example_config()
    del config["decisions"]
    rendered = helm.render(
        GATEWAY_CHART, "g", values={"config": config, "persistence": {"mountPath": "/data"}}
    )
    assert yaml.safe_load(rendered_config(rendered))["decisions"] == {
        "sqlite_path": "/data/decisions.sqlite"
    }
    mounts = {m["name"]: m for m in gateway_container(rendered)["volumeMounts"]}
    assert mounts["data"]["mountPath"] == "/data" and not mounts["data"].get("readOnly")


def test_decision_log_outside_the_data_volume_is_rejected(helm: Helm) -> None:
    values = {"config": {"decisions": {"sqlite_path": "/etc/decisions.sqlite"}}}
    with pytest.raises(HelmError, match=r"sqlite_path \(/etc/decisions.sqlite\) must be inside"):
        render_with(helm, values)


def checksum(manifests: list[Manifest]) -> str:
    return one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"
    ]


def test_config_change_rolls_the_pods(helm: Helm, manifests: list[Manifest]) -> None:
    changed = {"config": {"deployments": {"credit": {"router": {"arms": ["lr", "gbm"]}}}}}
    assert checksum(render_with(helm, changed)) != checksum(manifests)
    assert checksum(render_with(helm, {"podLabels": {"team": "risk"}})) == checksum(manifests)


# -- command line, ports, probes -----------------------------------------------------------


def test_args_are_gateway_flags(manifests: list[Manifest]) -> None:
    args = gateway_container(manifests)["args"]
    assert args[0] == "gateway"
    assert set(flags(args)) <= GATEWAY_FLAGS


def test_args_parse_with_the_real_cli(manifests: list[Manifest]) -> None:
    from gateway.cli import _parser

    args = _parser().parse_args(gateway_container(manifests)["args"])
    assert (args.command, args.config) == ("gateway", "/etc/arbiter/gateway.yaml")
    assert (args.http_port, args.grpc_port, args.drain_timeout_s) == (8000, 8001, 10.0)


def test_container_ports_match_cli_defaults(manifests: list[Manifest]) -> None:
    main = gateway_container(manifests)
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"http": 8000, "grpc": 8001}
    given = flags(main["args"])
    assert (given["--http-port"], given["--grpc-port"]) == ("8000", "8001")


def test_probes_hit_oip_health_on_the_http_port(manifests: list[Manifest]) -> None:
    main = gateway_container(manifests)
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # Readiness may wait on upstream models; the startup probe must not restart for that.
    assert main["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}


def test_service_exposes_http_and_grpc(manifests: list[Manifest]) -> None:
    ports = {p["name"]: p for p in one(manifests, "Service")["spec"]["ports"]}
    assert {"port": 8000, "targetPort": "http"}.items() <= ports["http"].items()
    assert {"port": 8001, "targetPort": "grpc", "appProtocol": "grpc"}.items() <= ports[
        "grpc"
    ].items()


def test_grace_period_covers_prestop_and_drain(manifests: list[Manifest]) -> None:
    main = gateway_container(manifests)
    sleep_cmd = main["lifecycle"]["preStop"]["exec"]["command"]
    drain = float(flags(main["args"])["--drain-timeout-s"])
    assert sleep_cmd[0] == "sleep" and int(sleep_cmd[1]) > 0
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] > int(sleep_cmd[1]) + drain


# -- security, scaling, storage ----------------------------------------------------------------


def test_pod_is_non_root_with_read_only_root(manifests: list[Manifest]) -> None:
    spec = pod_spec(manifests)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    ctx = gateway_container(manifests)["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["tmp"]


def test_pdb_by_default_and_hpa_when_enabled(helm: Helm, manifests: list[Manifest]) -> None:
    assert one(manifests, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert by_kind(manifests, "HorizontalPodAutoscaler") == []
    scaled = render_with(helm, EPHEMERAL | {"autoscaling": {"enabled": True}})
    hpa = one(scaled, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(scaled, "Deployment")["metadata"]["name"]
    assert "replicas" not in one(scaled, "Deployment")["spec"]
    assert one(scaled, "PodDisruptionBudget")


def test_persistent_decision_log(manifests: list[Manifest]) -> None:
    deployment = one(manifests, "Deployment")
    claim = one(manifests, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # One SQLite writer on a ReadWriteOnce claim: the old pod stops before the new starts.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_existing_claim_and_ephemeral_storage(helm: Helm) -> None:
    existing = render_with(helm, {"persistence": {"existingClaim": "decisions"}})
    assert by_kind(existing, "PersistentVolumeClaim") == []
    volumes = {v["name"]: v for v in pod_spec(existing)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "decisions"
    ephemeral = render_with(helm, EPHEMERAL)
    volumes = {v["name"]: v for v in pod_spec(ephemeral)["volumes"]}
    assert "emptyDir" in volumes["data"]
    assert one(ephemeral, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"


def test_persistence_with_several_replicas_is_rejected(helm: Helm) -> None:
    with pytest.raises(HelmError, match="one SQLite decision log cannot have several writers"):
        render_with(helm, {"autoscaling": {"enabled": True}})
    with pytest.raises(HelmError, match="one SQLite decision log cannot have several writers"):
        render_with(helm, {"replicaCount": 2})


# -- values the schema rejects ------------------------------------------------------------------

BAD_VALUES = [
    pytest.param(
        {"server": {"grpcPort": 70000}},
        "server.grpcPort: Must be less than or equal to 65535",
        id="port-70000",
    ),
    pytest.param(
        {"replicaCount": -1},
        "replicaCount: Must be greater than or equal to 0",
        id="replicas-negative",
    ),
    pytest.param(
        {"config": {"models": {"lr": {"url": "ftp://credit-lr:8081"}}}},
        "config.models.lr.url: Does not match pattern",
        id="url-scheme",
    ),
    pytest.param(
        {"config": {"models": {"lr": {"url": "grpc://credit-lr"}}}},
        "config.models.lr.url: Does not match pattern",
        id="url-without-port",
    ),
    pytest.param(
        {"config": {"models": {"lr": {"timeout": 1}}}},
        "Additional property timeout is not allowed",
        id="model-key-typo",
    ),
    pytest.param(
        {"config": {"decision": {"sqlite_path": "/var/lib/arbiter/d.sqlite"}}},
        "Additional property decision is not allowed",
        id="config-key-typo",
    ),
    pytest.param(
        {"config": {"models": {"knn": {"url": "grpc://knn:8081"}}}},
        "config.models.knn: name is required",
        id="model-without-name",
    ),
    pytest.param(
        {"config": {"deployments": {"credit": {"router": {"kind": "ucb"}}}}},
        "config.deployments.credit.router.kind must be one of the following",
        id="router-kind",
    ),
    pytest.param(
        {"persistence": {"mountPath": "relative"}},
        "persistence.mountPath: Does not match pattern",
        id="relative-mount",
    ),
    pytest.param(
        {"podSecurityContext": {"runAsNonRoot": False}},
        "podSecurityContext.runAsNonRoot does not match: true",
        id="root",
    ),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_bad_values_are_rejected(helm: Helm, override: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match="values don't meet the specifications") as rendered:
        render_with(helm, override)
    assert message in str(rendered.value)
    with pytest.raises(HelmError) as linted:
        helm.lint(GATEWAY_CHART, [EXAMPLE], override)
    assert message in str(linted.value)
