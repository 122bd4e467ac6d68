"""TLS and mutual TLS on both transports, with certificates made for the test by a
private CA: tritonclient over HTTPS and gRPC-TLS, clients without a certificate (or
trusting another CA) refused, and a gateway served over TLS reaching its pods over
``https://`` and ``grpcs://`` with a client certificate."""

from __future__ import annotations

import dataclasses
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from protos.server.tls import ServerTls
from tests.fakes import CreditLikeWrapper, credit_like_settings, expected_credit_like, model_pod
from tests.security import Certificates, make_certificates
from tests.servers import ServerThread, local_options

X = np.linspace(-1, 1, 40, dtype=np.float32).reshape(2, 20)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def _pod(name: str, tls: ServerTls) -> ServerThread:
    options = dataclasses.replace(local_options(), tls=tls)
    return ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings(name), options))


@pytest.fixture(scope="module")
def tls_pod(certs: Certificates) -> Iterator[ServerThread]:
    with _pod("m", ServerTls(certs.server_cert, certs.server_key)) as pod:
        yield pod


@pytest.fixture(scope="module")
def mtls_pod(certs: Certificates) -> Iterator[ServerThread]:
    with _pod("m", ServerTls(certs.server_cert, certs.server_key, certs.ca)) as pod:
        yield pod


def _http_infer(client: httpclient.InferenceServerClient, model: str) -> np.ndarray:
    tensor = httpclient.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    return client.infer(model, [tensor]).as_numpy("probabilities")


def _grpc_infer(client: grpcclient.InferenceServerClient, model: str) -> np.ndarray:
    tensor = grpcclient.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    return client.infer(model, [tensor]).as_numpy("probabilities")


def _https(server: ServerThread, certs: Certificates, ca=None, client=False):
    options = {"ca_certs": str(ca or certs.ca)}
    if client:
        options |= {"certfile": str(certs.client_cert), "keyfile": str(certs.client_key)}
    return httpclient.InferenceServerClient(server.http_hostport, ssl=True, ssl_options=options)


def _grpcs(server: ServerThread, certs: Certificates, ca=None, client=False):
    extra = {}
    if client:
        extra = {"private_key": str(certs.client_key), "certificate_chain": str(certs.client_cert)}
    return grpcclient.InferenceServerClient(server.grpc_target, ssl=True,
                                            root_certificates=str(ca or certs.ca), **extra)


def test_tritonclient_over_https_and_grpc_tls(tls_pod, certs) -> None:
    expected = expected_credit_like(X)["probabilities"]
    assert tls_pod.http_url.startswith("https://")
    np.testing.assert_allclose(_http_infer(_https(tls_pod, certs), "m"), expected, rtol=1e-6)
    np.testing.assert_allclose(_grpc_infer(_grpcs(tls_pod, certs), "m"), expected, rtol=1e-6)


def test_plain_text_and_untrusted_clients_are_refused(tls_pod, certs) -> None:
    with pytest.raises(InferenceServerException):
        _grpc_infer(grpcclient.InferenceServerClient(tls_pod.grpc_target), "m")
    with pytest.raises(InferenceServerException):
        _grpc_infer(_grpcs(tls_pod, certs, ca=certs.other_ca), "m")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{tls_pod.http_hostport}/v2/health/ready", timeout=5)
    context = ssl.create_default_context(cafile=str(certs.other_ca))
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(tls_pod.http_url + "/v2/health/ready", timeout=5,
                               context=context)


def test_mtls_needs_a_client_certificate(mtls_pod, certs) -> None:
    expected = expected_credit_like(X)["probabilities"]
    np.testing.assert_allclose(_http_infer(_https(mtls_pod, certs, client=True), "m"),
                               expected, rtol=1e-6)
    np.testing.assert_allclose(_grpc_infer(_grpcs(mtls_pod, certs, client=True), "m"),
                               expected, rtol=1e-6)
    with pytest.raises(InferenceServerException):
        _grpc_infer(_grpcs(mtls_pod, certs), "m")
    context = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(mtls_pod.http_url + "/v2/health/ready", timeout=5,
                               context=context).read()


def test_gateway_over_tls_reaches_pods_over_mtls(mtls_pod, certs) -> None:
    client = {"ca_file": str(certs.ca), "client_cert": str(certs.client_cert),
              "client_key": str(certs.client_key)}
    config = GatewayConfig.model_validate({
        "models": {"g": {"url": f"grpcs://{mtls_pod.grpc_target}", "name": "m", **client},
                   "h": {"url": f"https://{mtls_pod.http_hostport}", "name": "m", **client}},
        "deployments": {"over-grpcs": {"router": {"kind": "weighted", "weights": {"g": 1}}},
                        "over-https": {"router": {"kind": "weighted", "weights": {"h": 1}}}},
        "store": {"kind": "memory"},
    })
    options = dataclasses.replace(local_options(),
                                  tls=ServerTls(certs.server_cert, certs.server_key))
    expected = expected_credit_like(X)["probabilities"]
    with ServerThread(lambda: build_gateway(config, options, 20)[1]) as gateway:
        for deployment in ("over-grpcs", "over-https"):
            np.testing.assert_allclose(_http_infer(_https(gateway, certs), deployment),
                                       expected, rtol=1e-6)
            np.testing.assert_allclose(_grpc_infer(_grpcs(gateway, certs), deployment),
                                       expected, rtol=1e-6)


def test_gateway_without_a_client_certificate_cannot_reach_mtls_pods(mtls_pod, certs) -> None:
    import asyncio

    from protos.errors import UpstreamUnavailableError

    config = GatewayConfig.model_validate({
        "models": {"g": {"url": f"grpcs://{mtls_pod.grpc_target}", "name": "m",
                         "ca_file": str(certs.ca)}},
        "deployments": {"d": {"router": {"kind": "weighted", "weights": {"g": 1}}}},
        "store": {"kind": "memory"},
    })
    async def start() -> None:
        _, server = build_gateway(config, local_options(), 1.0)  # channels on this loop
        try:
            await server.start()
        finally:
            await server.stop()

    with pytest.raises(UpstreamUnavailableError) as refused:
        asyncio.run(start())
    assert mtls_pod.grpc_target not in str(refused.value).split("did not answer")[1]
