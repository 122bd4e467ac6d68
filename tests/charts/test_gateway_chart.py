"""charts/gateway (arbiter-gateway): lint, Kubernetes schema validity, rendered
contents, and the rendered config file read by the gateway's own loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

EXAMPLE = EXAMPLES / "gateway.yaml"
HA_EXAMPLE = EXAMPLES / "gateway-postgres-ha.yaml"
GATEWAY_FLAGS = {"--config", "--http-port", "--grpc-port", "--drain-timeout-s", "--host",
                 "--tls-cert", "--tls-key", "--tls-client-ca"}
# The SQLite example on an emptyDir instead of a PersistentVolumeClaim.
EPHEMERAL = {"persistence": {"enabled": False}}
# The example on PostgreSQL, the only store that allows several replicas.
POSTGRES = {
    "store": {"kind": "postgres", "path": "", "dsnSecret": {"name": "pg", "key": "url"}},
    "persistence": {"enabled": False},
}


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


@pytest.fixture(scope="module")
def ha_manifests(helm: Helm) -> list[Manifest]:
    return helm.render(GATEWAY_CHART, "credit-gateway", [HA_EXAMPLE])


def load_rendered(manifests: list[Manifest], tmp_path: Path) -> GatewayConfig:
    """The rendered config file read by the gateway's own loader."""
    from gateway.config import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text(rendered_config(manifests))
    return load_config(path)


# -- helm and kubernetes-validate ---------------------------------------------------------


@pytest.mark.parametrize("example", [EXAMPLE, HA_EXAMPLE], ids=["sqlite", "postgres-ha"])
def test_example_values_pass_strict_lint(helm: Helm, example: Path) -> None:
    helm.lint(GATEWAY_CHART, [example])


def test_chart_without_models_fails_lint(helm: Helm) -> None:
    with pytest.raises(HelmError, match="config.models: Must have at least 1 properties"):
        helm.lint(GATEWAY_CHART)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="sqlite-pvc"),
        pytest.param(EPHEMERAL | {"metrics": {"podAnnotations": False}}, id="sqlite-emptydir"),
        pytest.param(
            POSTGRES | {"autoscaling": {"enabled": False}, "replicaCount": 3},
            id="postgres-3-replicas",
        ),
    ],
)
def test_render_is_valid_kubernetes(helm: Helm, values: dict[str, Any]) -> None:
    rendered = helm.template(GATEWAY_CHART, "credit-gateway", [EXAMPLE], values)
    assert kubernetes_validate(rendered) == []


def test_postgres_ha_example_is_valid_kubernetes(helm: Helm) -> None:
    rendered = helm.template(GATEWAY_CHART, "credit-gateway", [HA_EXAMPLE])
    assert kubernetes_validate(rendered) == []


# -- the gateway config -------------------------------------------------------------------


def test_config_map_holds_the_values_config(manifests: list[Manifest]) -> None:
    rendered = yaml.safe_load(rendered_config(manifests))
    assert rendered == example_config() | {
        "store": {"kind": "sqlite", "path": "/var/lib/arbiter/arbiter.sqlite"}
    }
    assert "decisions" not in rendered and "state" not in rendered


def test_config_is_accepted_by_the_gateway_loader(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    config = load_rendered(manifests, tmp_path)
    assert {key: (m.url, m.name) for key, m in config.models.items()} == {
        key: (m["url"], m["name"]) for key, m in example_config()["models"].items()
    }
    assert set(config.deployments) == {"credit", "credit-cc", "credit-shadow"}
    assert config.store.kind == "sqlite"
    # Absolute, on the data volume: not rebased onto the (read-only) config folder.
    assert config.store.path == Path("/var/lib/arbiter/arbiter.sqlite")


def test_store_options_reach_the_gateway_loader(helm: Helm, tmp_path: Path) -> None:
    """Every store option of the values lands in the config's store block under the
    gateway's name for it, so the chart covers gateway/config.py StoreSpec."""
    from gateway.config import StoreSpec

    options = {
        "decisionWrites": "before_answer",
        "writeQueue": 500,
        "flushIntervalMs": 5,
        "refreshIntervalMs": 100,
        "poolSize": 8,
        "memorySize": 300,
        "idempotencyWindowSeconds": 60,
        "inputs": "hash",
        "retentionDays": 30,
    }
    store = load_rendered(render_with(helm, {"store": options}), tmp_path).store
    assert store.model_dump(include=set(StoreSpec.model_fields) - {"kind", "path", "dsn"}) == {
        "decision_writes": "before_answer",
        "write_queue": 500,
        "flush_interval_ms": 5.0,
        "refresh_interval_ms": 100.0,
        "pool_size": 8,
        "memory_size": 300,
        "idempotency_window_s": 60.0,
        "inputs": "hash",
        "retention_days": 30.0,
    }
    schema = json.loads((GATEWAY_CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["store"]["properties"]) == {
        "kind",
        "path",
        "dsnSecret",
        *options,
    }


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
    schema = json.loads((GATEWAY_CHART / "values.schema.json").read_text())
    return schema["properties"]["config"]


def test_config_schema_fields_match_the_gateway_config() -> None:
    """values.schema.json names exactly the fields of gateway/config.py (but `store`,
    rendered from the top-level store values), so a key the gateway would reject
    fails at helm time and the schema does not drift."""
    from gateway.config import DeploymentSpec, GatewayConfig, ModelRef

    schema = config_schema()["properties"]
    rendered_from_values = {"store", "auth", "feedback"}  # store and security values
    assert set(schema) == set(GatewayConfig.model_fields) - rendered_from_values
    assert set(schema["models"]["additionalProperties"]["properties"]) == set(ModelRef.model_fields)
    assert set(schema["deployments"]["additionalProperties"]["properties"]) == set(
        DeploymentSpec.model_fields
    )


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


def test_sqlite_store_defaults_onto_the_data_volume(helm: Helm) -> None:
    rendered = helm.render(
        GATEWAY_CHART,
        "g",
        values={"config": example_config(), "persistence": {"mountPath": "/data"}},
    )
    assert yaml.safe_load(rendered_config(rendered))["store"] == {
        "kind": "sqlite",
        "path": "/data/arbiter.sqlite",
    }
    mounts = {m["name"]: m for m in gateway_container(rendered)["volumeMounts"]}
    assert mounts["data"]["mountPath"] == "/data" and not mounts["data"].get("readOnly")


def test_sqlite_store_outside_the_data_volume_is_rejected(helm: Helm) -> None:
    values = {"store": {"path": "/etc/arbiter.sqlite"}}
    with pytest.raises(HelmError, match=r"store.path \(/etc/arbiter.sqlite\) must be inside"):
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
    scaled = render_with(helm, POSTGRES | {"autoscaling": {"enabled": True}})
    hpa = one(scaled, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(scaled, "Deployment")["metadata"]["name"]
    assert "replicas" not in one(scaled, "Deployment")["spec"]
    assert one(scaled, "PodDisruptionBudget")


def test_persistent_sqlite_store(manifests: list[Manifest]) -> None:
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


# -- PostgreSQL: several replicas, the DSN from a Secret --------------------------------------


def test_postgres_dsn_comes_from_the_secret(ha_manifests: list[Manifest]) -> None:
    env = {e["name"]: e for e in gateway_container(ha_manifests)["env"]}
    assert env["ARBITER_STORE_DSN"] == {
        "name": "ARBITER_STORE_DSN",
        "valueFrom": {"secretKeyRef": {"name": "credit-gateway-store", "key": "dsn"}},
    }


def test_postgres_config_has_no_dsn(ha_manifests: list[Manifest]) -> None:
    text = rendered_config(ha_manifests)
    store = yaml.safe_load(text)["store"]
    assert store["kind"] == "postgres"
    assert "dsn" not in store and "path" not in store
    assert "postgresql://" not in yaml.safe_dump(one(ha_manifests, "ConfigMap"))
    assert "decisions" not in yaml.safe_load(text) and "state" not in yaml.safe_load(text)


def test_postgres_config_is_accepted_by_the_gateway_loader(
    ha_manifests: list[Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.config import DSN_ENV

    dsn = "postgresql://arbiter:secret@postgres:5432/arbiter"
    monkeypatch.setenv(DSN_ENV, dsn)  # what the pod gets from the Secret
    store = load_rendered(ha_manifests, tmp_path).store
    assert (store.kind, store.dsn, store.resolved_dsn) == ("postgres", None, dsn)
    assert (store.decision_writes, store.pool_size) == ("before_answer", 8)


def test_postgres_scales_out_without_a_data_volume(ha_manifests: list[Manifest]) -> None:
    hpa = one(ha_manifests, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    deployment = one(ha_manifests, "Deployment")
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert by_kind(ha_manifests, "PersistentVolumeClaim") == []
    assert "data" not in {v["name"] for v in pod_spec(ha_manifests)["volumes"]}
    assert "data" not in {m["name"] for m in gateway_container(ha_manifests)["volumeMounts"]}


def test_postgres_with_fixed_replicas(helm: Helm) -> None:
    rendered = render_with(helm, POSTGRES | {"replicaCount": 3})
    assert one(rendered, "Deployment")["spec"]["replicas"] == 3
    assert by_kind(rendered, "HorizontalPodAutoscaler") == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"replicaCount": 3}, "replicaCount > 1 and autoscaling.enabled need", id="replicas"
        ),
        pytest.param(
            {"autoscaling": {"enabled": True}},
            "autoscaling.enabled needs? store.kind postgres",
            id="autoscaling",
        ),
        pytest.param(
            POSTGRES | {"persistence": {"enabled": True}},
            "persistence.enabled is for store.kind sqlite",
            id="postgres-pvc",
        ),
        pytest.param(
            {"store": {"kind": "postgres"}, "persistence": {"enabled": False}},
            "store.kind postgres needs store.dsnSecret.name",
            id="postgres-without-secret",
        ),
    ],
)
def test_templates_guard_the_store_without_the_schema(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    """The templates refuse what the schema refuses, for a render that skips it."""
    args = ["template", "g", str(GATEWAY_CHART), "--skip-schema-validation", "-f", str(EXAMPLE)]
    with pytest.raises(HelmError, match=message):
        helm.run(*args, "-f", "-", stdin=json.dumps(values))


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
        {"config": {"deployment": {}}},
        "Additional property deployment is not allowed",
        id="config-key-typo",
    ),
    pytest.param(
        {"config": {"decisions": {"sqlite_path": "/var/lib/arbiter/d.sqlite"}}},
        "Additional property decisions is not allowed",
        id="config-old-decisions",
    ),
    pytest.param(
        {"config": {"state": {"kind": "sqlite"}}},
        "Additional property state is not allowed",
        id="config-old-state",
    ),
    pytest.param(
        {"config": {"store": {"kind": "postgres"}}},
        "Additional property store is not allowed",
        id="config-store",
    ),
    pytest.param(
        {"replicaCount": 3},
        "replicaCount: Must be less than or equal to 1",
        id="sqlite-3-replicas",
    ),
    pytest.param(
        EPHEMERAL | {"replicaCount": 3},
        "replicaCount: Must be less than or equal to 1",
        id="sqlite-emptydir-3-replicas",
    ),
    pytest.param(
        {"autoscaling": {"enabled": True}},
        "autoscaling.enabled does not match: false",
        id="sqlite-autoscaling",
    ),
    pytest.param(
        {"store": {"kind": "postgres"}, "persistence": {"enabled": False}},
        "store.dsnSecret.name: String length must be greater than or equal to 1",
        id="postgres-without-secret",
    ),
    pytest.param(
        POSTGRES | {"persistence": {"enabled": True}},
        "persistence.enabled does not match: false",
        id="postgres-pvc",
    ),
    pytest.param(
        {"store": {"kind": "memory"}},
        "store.kind must be one of the following",
        id="store-kind",
    ),
    pytest.param(
        {"store": {"path": "arbiter.sqlite"}},
        "store.path: Does not match pattern",
        id="store-relative-path",
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
