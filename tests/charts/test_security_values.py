"""Both charts with security on: tokens and certificates from Secrets, mTLS, feedback
tokens, TLS and tokens to the pods, and the NetworkPolicies; rendered, validated with
``kubernetes-validate --strict``, and read by the real CLI and config loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.rendering import (
    EXAMPLES,
    GATEWAY_CHART,
    MODEL_CHART,
    Helm,
    HelmError,
    Manifest,
    container,
    flags,
    kubernetes_validate,
    one,
)

MODEL_SECURE = {
    "security": {"auth": {"tokensSecret": "credit-lr-tokens"},
                 "tls": {"secretName": "credit-lr-tls", "clientAuth": True}},
}
GATEWAY_SECURE = {
    "security": {
        "auth": {"tokensSecret": "gateway-tokens", "protectMetrics": True},
        "tls": {"secretName": "gateway-tls"},
        "feedback": {"requireDecisionToken": True, "secretName": "feedback-key"},
        "upstream": {"tlsSecret": "gateway-client-tls", "tokenSecret": "pod-token"},
    },
    "networkPolicy": {"allowedNamespaces": [{"kubernetes.io/metadata.name": "credit-web"}]},
}


def _both(helm: Helm, model: dict | None, gateway: dict | None) -> tuple[str, str]:
    return (helm.template(MODEL_CHART, "credit-lr", [EXAMPLES / "lr.yaml"], model),
            helm.template(GATEWAY_CHART, "credit-gateway", [EXAMPLES / "gateway.yaml"], gateway))


@pytest.mark.parametrize("secure", [False, True], ids=["defaults", "secured"])
def test_renders_are_valid_kubernetes(helm: Helm, secure: bool) -> None:
    model, gateway = _both(helm, MODEL_SECURE if secure else None,
                           GATEWAY_SECURE if secure else None)
    assert kubernetes_validate(model) == []
    assert kubernetes_validate(gateway) == []


def _docs(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_both_listen_on_every_interface_by_default(helm: Helm) -> None:
    model, gateway = _both(helm, None, None)
    for text, name in ((model, "model"), (gateway, "gateway")):
        assert flags(container(_docs(text), name)["args"])["--host"] == "0.0.0.0"


def test_model_pod_with_tokens_and_mtls(helm: Helm) -> None:
    from gateway.cli import _parser

    docs = _docs(helm.template(MODEL_CHART, "credit-lr", [EXAMPLES / "lr.yaml"], MODEL_SECURE))
    main = container(docs, "model")
    given = flags(main["args"])
    assert given["--auth-tokens-file"] == "/etc/arbiter-auth/tokens.yaml"
    assert (given["--tls-cert"], given["--tls-key"], given["--tls-client-ca"]) == (
        "/etc/arbiter-tls/tls.crt", "/etc/arbiter-tls/tls.key", "/etc/arbiter-tls/ca.crt")
    assert _parser().parse_args(main["args"]).tls_client_ca == "/etc/arbiter-tls/ca.crt"
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    assert mounts["auth"] == "/etc/arbiter-auth" and mounts["tls"] == "/etc/arbiter-tls"
    volumes = {v["name"]: v.get("secret", {}).get("secretName")
               for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth"] == "credit-lr-tokens" and volumes["tls"] == "credit-lr-tls"
    assert main["readinessProbe"]["tcpSocket"] == {"port": "http"}  # no client cert


def test_model_network_policy_admits_the_gateway_only(helm: Helm) -> None:
    docs = _docs(helm.template(MODEL_CHART, "credit-lr", [EXAMPLES / "lr.yaml"]))
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "credit-lr"
    [rule] = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/component": "gateway"}}}]
    gateway = _docs(helm.template(GATEWAY_CHART, "credit-gateway", [EXAMPLES / "gateway.yaml"]))
    labels = one(gateway, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "gateway"


def test_gateway_with_tokens_tls_and_feedback_tokens(helm: Helm, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config import load_config

    docs = _docs(helm.template(GATEWAY_CHART, "credit-gateway", [EXAMPLES / "gateway.yaml"],
                               GATEWAY_SECURE))
    main = container(docs, "gateway")
    given = flags(main["args"])
    assert given["--tls-cert"] == "/etc/arbiter-tls/tls.crt"
    assert main["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in main["env"]}
    assert env["ARBITER_FEEDBACK_SECRET"] == {"name": "feedback-key", "key": "secret"}
    assert env["ARBITER_UPSTREAM_TOKEN"] == {"name": "pod-token", "key": "token"}
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    assert mounts["upstream-tls"] == "/etc/arbiter-upstream-tls"
    path = tmp_path / "gateway.yaml"
    path.write_text(one(docs, "ConfigMap")["data"]["gateway.yaml"])
    monkeypatch.setenv("ARBITER_FEEDBACK_SECRET", "a-secret-of-32-characters-------")
    config = load_config(path)
    assert config.auth is not None and config.auth.protect_metrics
    assert str(config.auth.tokens_file) == "/etc/arbiter-auth/tokens.yaml"
    assert config.token_required() == sorted(config.deployments)
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "credit-web"}}}]


def test_gateway_network_policy_defaults_to_its_namespace(helm: Helm) -> None:
    docs = _docs(helm.template(GATEWAY_CHART, "credit-gateway", [EXAMPLES / "gateway.yaml"]))
    assert one(docs, "NetworkPolicy")["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]


def test_feedback_tokens_need_their_secret(helm: Helm) -> None:
    values: dict[str, Any] = {"security": {"feedback": {"requireDecisionToken": True}}}
    with pytest.raises(HelmError, match="then"):
        helm.template(GATEWAY_CHART, "credit-gateway", [EXAMPLES / "gateway.yaml"], values)
