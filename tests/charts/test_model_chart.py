"""charts/model (arbiter-model): lint, Kubernetes schema validity and rendered contents.

Every framework is rendered from its example values file (charts/examples), the
same files the chart README installs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.rendering import (
    EXAMPLES,
    MODEL_CHART,
    Helm,
    HelmError,
    Manifest,
    by_kind,
    container,
    flags,
    kubernetes_validate,
    one,
)

EXAMPLE_BY_FRAMEWORK = {"sklearn": "lr.yaml", "onnx": "gbm.yaml", "torch": "mlp.yaml"}
# The flags of `arbiter serve-model` the chart may pass (gateway/cli.py).
SERVE_MODEL_FLAGS = {
    "--framework",
    "--model",
    "--name",
    "--version",
    "--settings",
    "--http-port",
    "--grpc-port",
    "--drain-timeout-s",
    "--host",
    "--auth-tokens-file",
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
}
# A minimal valid release: a sklearn model on a claim.
BASE: dict[str, Any] = {"model": {"name": "m1"}, "artifact": {"pvc": {"claimName": "models"}}}


def example(framework: str) -> Path:
    return EXAMPLES / EXAMPLE_BY_FRAMEWORK[framework]


def example_values(framework: str) -> dict[str, Any]:
    return yaml.safe_load(example(framework).read_text())


@pytest.fixture(scope="module", params=sorted(EXAMPLE_BY_FRAMEWORK))
def framework(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def manifests(helm: Helm, framework: str) -> list[Manifest]:
    return helm.render(MODEL_CHART, f"credit-{framework}", [example(framework)])


def model_container(manifests: list[Manifest]) -> dict[str, Any]:
    return container(manifests, "model")


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    return one(manifests, "Deployment")["spec"]["template"]["spec"]


def settings_file(manifests: list[Manifest]) -> dict[str, Any]:
    return yaml.safe_load(one(manifests, "ConfigMap")["data"]["settings.yaml"])


# -- helm and kubernetes-validate ---------------------------------------------------


def test_install_script_gives_helm_3_18(helm: Helm) -> None:
    assert helm.run("version", "--short").startswith("v3.18")


def test_install_script_reuses_the_cached_binary(helm: Helm) -> None:
    proc = subprocess.run(
        ["bash", ".ci/install-helm.sh", str(helm.binary.parent)],
        cwd=MODEL_CHART.parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "using cached v3.18" in proc.stderr
    assert Path(proc.stdout.strip()) == helm.binary


def test_example_values_pass_strict_lint(helm: Helm, framework: str) -> None:
    helm.lint(MODEL_CHART, [example(framework)])


def test_render_is_valid_kubernetes(helm: Helm, framework: str) -> None:
    rendered = helm.template(MODEL_CHART, f"credit-{framework}", [example(framework)])
    assert kubernetes_validate(rendered) == []


def test_uri_source_render_is_valid_kubernetes(helm: Helm) -> None:
    rendered = helm.template(
        MODEL_CHART, "credit-gbm", [example("onnx")], {"artifact": {"uri": {"sha256": "ab" * 32}}}
    )
    assert kubernetes_validate(rendered) == []


def test_service_monitor_is_optional(helm: Helm) -> None:
    assert by_kind(helm.render(MODEL_CHART, "m", values=BASE), "ServiceMonitor") == []
    values = BASE | {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"r": "p"}}}}
    rendered = helm.template(MODEL_CHART, "m", values=values)
    monitor = one([d for d in yaml.safe_load_all(rendered) if d], "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["r"] == "p"
    assert {"port": "http", "path": "/metrics"}.items() <= monitor["spec"]["endpoints"][0].items()
    # No schema ships for the CRD: a warning about it, nothing else.
    problems = kubernetes_validate(rendered)
    assert problems and all("ServiceMonitor" in p and p.startswith("WARN") for p in problems)


# -- the server's command line ----------------------------------------------------------


def test_args_are_serve_model_flags(manifests: list[Manifest], framework: str) -> None:
    args = model_container(manifests)["args"]
    given = flags(args)
    values = example_values(framework)
    assert args[0] == "serve-model"
    assert set(given) <= SERVE_MODEL_FLAGS
    assert given["--framework"] == framework
    assert given["--name"] == values["model"]["name"]
    assert given["--version"] == values["model"]["version"]
    assert given["--model"] == f"/mnt/models/{values['artifact']['file']}"
    assert given["--settings"] == "/etc/arbiter/settings.yaml"


def test_args_parse_with_the_real_cli(manifests: list[Manifest], framework: str) -> None:
    from gateway.cli import _parser

    args = _parser().parse_args(model_container(manifests)["args"])
    assert (args.command, args.framework) == ("serve-model", framework)
    assert (args.http_port, args.grpc_port, args.drain_timeout_s) == (8080, 8081, 10.0)


def test_settings_file_loads_with_the_wrapper_loader(
    manifests: list[Manifest], framework: str, tmp_path: Path
) -> None:
    from wrappers.settings import load_settings

    path = tmp_path / "settings.yaml"
    path.write_text(one(manifests, "ConfigMap")["data"]["settings.yaml"])
    settings = load_settings(path)
    given = flags(model_container(manifests)["args"])
    assert (settings.name, settings.version, settings.framework, settings.uri) == (
        given["--name"],
        given["--version"],
        framework,
        given["--model"],
    )
    from pydantic import TypeAdapter

    from wrappers.settings import ModelSettings

    for key, value in example_values(framework)["model"].get("settings", {}).items():
        field = TypeAdapter(ModelSettings.model_fields[key].annotation)
        assert getattr(settings, key) == field.validate_python(value)


def test_settings_schema_matches_model_settings_fields() -> None:
    """values.schema.json model.settings lists exactly the ModelSettings fields the
    chart does not set itself, so the schema does not drift from the wrapper."""
    import json

    from wrappers.settings import ModelSettings

    schema = json.loads((MODEL_CHART / "values.schema.json").read_text())
    settings_schema = schema["properties"]["model"]["properties"]["settings"]
    chart_owned = {"name", "version", "framework", "uri"}
    assert set(settings_schema["properties"]) == set(ModelSettings.model_fields) - chart_owned


def test_chart_fields_win_over_inline_settings(helm: Helm, tmp_path: Path) -> None:
    values = BASE | {"model": {"name": "m1", "settings": {"max_batch_size": 8}}}
    assert settings_file(helm.render(MODEL_CHART, "m", values=values)) == {
        "name": "m1",
        "framework": "sklearn",
        "uri": "/mnt/models/model.joblib",
        "max_batch_size": 8,
    }


# -- ports and probes --------------------------------------------------------------------


def test_container_ports_match_cli_flags(manifests: list[Manifest]) -> None:
    main = model_container(manifests)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    given = flags(main["args"])
    assert ports == {"http": 8080, "grpc": 8081}
    assert (given["--http-port"], given["--grpc-port"]) == ("8080", "8081")


def test_probes_hit_oip_health_on_the_http_port(manifests: list[Manifest]) -> None:
    main = model_container(manifests)
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup = main["startupProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # A slow model load gets minutes, not seconds, before liveness can restart it.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_service_exposes_http_and_grpc(manifests: list[Manifest]) -> None:
    service = one(manifests, "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {"port": 8080, "targetPort": "http"}.items() <= ports["http"].items()
    assert {"port": 8081, "targetPort": "grpc", "appProtocol": "grpc"}.items() <= ports[
        "grpc"
    ].items()
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_prometheus_scrape_annotations(manifests: list[Manifest]) -> None:
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }.items() <= annotations.items()


def test_custom_ports_flow_to_args_and_service(helm: Helm) -> None:
    values = BASE | {"server": {"httpPort": 9000, "grpcPort": 9001, "drainTimeoutSeconds": 3}}
    rendered = helm.render(MODEL_CHART, "m", values=values)
    given = flags(model_container(rendered)["args"])
    assert (given["--http-port"], given["--grpc-port"]) == ("9000", "9001")
    assert {p["containerPort"] for p in model_container(rendered)["ports"]} == {9000, 9001}


# -- termination ---------------------------------------------------------------------------


def grace_budget(manifests: list[Manifest]) -> tuple[int, int, int]:
    """(terminationGracePeriodSeconds, preStop sleep, drain timeout) of the release."""
    main = model_container(manifests)
    sleep_cmd = main["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep_cmd[0] == "sleep"
    drain = float(flags(main["args"])["--drain-timeout-s"])
    return pod_spec(manifests)["terminationGracePeriodSeconds"], int(sleep_cmd[1]), int(drain)


def test_grace_period_covers_prestop_and_drain(manifests: list[Manifest]) -> None:
    grace, sleep, drain = grace_budget(manifests)
    assert sleep > 0
    assert grace > sleep + drain


def test_grace_period_is_computed_from_values(helm: Helm) -> None:
    values = BASE | {
        "server": {"drainTimeoutSeconds": 30},
        "termination": {"preStopSleepSeconds": 15, "bufferSeconds": 5},
    }
    assert grace_budget(helm.render(MODEL_CHART, "m", values=values)) == (50, 15, 30)


def test_grace_period_override_too_short_is_rejected(helm: Helm) -> None:
    values = BASE | {"termination": {"gracePeriodSeconds": 15}}
    with pytest.raises(HelmError, match=r"gracePeriodSeconds \(15\) must be greater than"):
        helm.template(MODEL_CHART, "m", values=values)
    values = BASE | {"termination": {"gracePeriodSeconds": 16}}
    assert grace_budget(helm.render(MODEL_CHART, "m", values=values))[0] == 16


# -- security --------------------------------------------------------------------------------


def assert_hardened(container_spec: dict[str, Any]) -> None:
    ctx = container_spec["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container_spec["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"


def test_pod_is_non_root_with_read_only_root(helm: Helm, manifests: list[Manifest]) -> None:
    spec = pod_spec(manifests)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for c in spec["containers"] + spec.get("initContainers", []):
        assert_hardened(c)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["tmp"]


# -- scaling and disruption ------------------------------------------------------------------


def test_hpa_and_pdb_target_the_deployment(manifests: list[Manifest]) -> None:
    deployment = one(manifests, "Deployment")
    hpa, pdb = one(manifests, "HorizontalPodAutoscaler"), one(manifests, "PodDisruptionBudget")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # The HPA owns the replica count.
    assert "replicas" not in deployment["spec"]


def test_fixed_replicas_without_hpa(helm: Helm) -> None:
    values = BASE | {
        "replicaCount": 3,
        "autoscaling": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
    }
    rendered = helm.render(MODEL_CHART, "m", values=values)
    assert one(rendered, "Deployment")["spec"]["replicas"] == 3
    assert by_kind(rendered, "HorizontalPodAutoscaler") == []
    assert by_kind(rendered, "PodDisruptionBudget") == []


# -- artifact sources and config rollout -------------------------------------------------------


def test_pvc_artifact_is_mounted_read_only(helm: Helm) -> None:
    rendered = helm.render(MODEL_CHART, "credit-lr", [example("sklearn")])
    volumes = {v["name"]: v for v in pod_spec(rendered)["volumes"]}
    assert volumes["model-store"]["persistentVolumeClaim"] == {
        "claimName": "arbiter-models",
        "readOnly": True,
    }
    mounts = {m["name"]: m for m in model_container(rendered)["volumeMounts"]}
    assert {"mountPath": "/mnt/models", "readOnly": True}.items() <= mounts["model-store"].items()


def test_uri_artifact_is_fetched_by_an_init_container(helm: Helm) -> None:
    values = example_values("onnx")
    rendered = helm.render(MODEL_CHART, "credit-gbm", [example("onnx")])
    spec = pod_spec(rendered)
    (fetch,) = spec["initContainers"]
    assert fetch["command"] == ["python3", "/etc/arbiter/fetch_model.py"]
    assert fetch["args"][:2] == [values["artifact"]["uri"]["url"], "/mnt/models/model.onnx"]
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}["model-store"]
    init_mounts = {m["name"]: m for m in fetch["volumeMounts"]}
    assert not init_mounts["model-store"].get("readOnly", False)
    main_mounts = {m["name"]: m for m in model_container(rendered)["volumeMounts"]}
    assert main_mounts["model-store"]["readOnly"] is True
    assert "fetch_model.py" in one(rendered, "ConfigMap")["data"]


def test_fetch_script_downloads_and_checks_sha256(helm: Helm, tmp_path: Path) -> None:
    """Run the init container's script, as rendered, on a file:// URL."""
    rendered = helm.render(MODEL_CHART, "credit-gbm", [example("onnx")])
    script = tmp_path / "fetch_model.py"
    script.write_text(one(rendered, "ConfigMap")["data"]["fetch_model.py"])
    source = tmp_path / "artifact.bin"
    source.write_bytes(b"\x00onnx bytes" * 1000)
    good = hashlib.sha256(source.read_bytes()).hexdigest()

    def fetch(dest: Path, sha: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), source.as_uri(), str(dest), sha, "5"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert fetch(tmp_path / "ok.onnx", good).returncode == 0
    assert (tmp_path / "ok.onnx").read_bytes() == source.read_bytes()
    bad = fetch(tmp_path / "bad.onnx", "0" * 64)
    assert bad.returncode == 1 and "sha256 mismatch" in bad.stderr
    assert not (tmp_path / "bad.onnx").exists() and not (tmp_path / "bad.onnx.part").exists()


def checksum(manifests: list[Manifest]) -> str:
    return one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"
    ]


def test_settings_change_rolls_the_pods(helm: Helm) -> None:
    base = checksum(helm.render(MODEL_CHART, "m", values=BASE))
    changed = BASE | {"model": {"name": "m1", "settings": {"max_batch_size": 4}}}
    unrelated = BASE | {"replicaCount": 5}
    assert checksum(helm.render(MODEL_CHART, "m", values=changed)) != base
    assert checksum(helm.render(MODEL_CHART, "m", values=unrelated)) == base


def test_release_name_gives_the_service_the_gateway_example_uses(helm: Helm) -> None:
    rendered = helm.render(MODEL_CHART, "credit-lr", [example("sklearn")])
    assert one(rendered, "Service")["metadata"]["name"] == "credit-lr-arbiter-model"
    assert one(rendered, "Deployment")["metadata"]["labels"]["arbiter.dev/model"] == "credit-lr"


# -- values the schema rejects -------------------------------------------------------------------

# (override, message helm prints, whether the override goes on top of lr.yaml)
BAD_VALUES = [
    pytest.param(
        {"model": {"framework": "tensorflow"}},
        'model.framework must be one of the following: "sklearn", "onnx", "torch"',
        True,
        id="framework-tensorflow",
    ),
    pytest.param(
        {"server": {"httpPort": 70000}},
        "server.httpPort: Must be less than or equal to 65535",
        True,
        id="port-70000",
    ),
    pytest.param(
        {"service": {"grpcPort": 0}},
        "service.grpcPort: Must be greater than or equal to 1",
        True,
        id="service-port-0",
    ),
    pytest.param(
        {"model": {"version": "1"}, "artifact": {"pvc": {"claimName": "c"}}},
        "model: name is required",
        False,
        id="missing-name",
    ),
    pytest.param(
        {"replicaCount": -1},
        "replicaCount: Must be greater than or equal to 0",
        True,
        id="replicas-negative",
    ),
    pytest.param(
        {"model": {"settings": {"max_batch_sise": 8}}},
        "Additional property max_batch_sise is not allowed",
        True,
        id="settings-typo",
    ),
    pytest.param(
        {"artifact": {"source": "uri"}},
        "artifact.uri.url: Does not match pattern",
        True,
        id="uri-without-url",
    ),
    pytest.param(
        {"artifact": {"pvc": {"claimName": ""}}},
        "artifact.pvc.claimName: String length must be greater than or equal to 1",
        True,
        id="pvc-without-claim",
    ),
    pytest.param(
        {"securityContext": {"readOnlyRootFilesystem": False}},
        "securityContext.readOnlyRootFilesystem does not match: true",
        True,
        id="writable-root",
    ),
    pytest.param(
        {"imageTag": "x"}, "Additional property imageTag is not allowed", True, id="unknown-key"
    ),
]


@pytest.mark.parametrize(("override", "message", "on_example"), BAD_VALUES)
def test_bad_values_are_rejected(
    helm: Helm, override: dict[str, Any], message: str, on_example: bool
) -> None:
    files = [example("sklearn")] if on_example else []
    with pytest.raises(HelmError, match="values don't meet the specifications") as rendered:
        helm.template(MODEL_CHART, "m", files, override)
    assert message in str(rendered.value)
    with pytest.raises(HelmError) as linted:
        helm.lint(MODEL_CHART, files, override)
    assert message in str(linted.value)
