"""Synchronous Open Inference Protocol clients for explainer worker processes.

An explainer perturbs one row into hundreds of rows and asks the model about them; these
clients send each such batch as ONE OIP inference request to the model's server (a
wrapper pod or the gateway's upstream), over REST (``http://host:port``, JSON, keep-alive)
or gRPC (``grpc://host:port``, ``inference.GRPCInferenceService/ModelInfer``), over TLS
with ``https://`` and ``grpcs://``, with a bearer token when the model's server has auth.
They are blocking on purpose: they run in worker processes, never in the event loop.

:class:`ModelEndpoint` is a picklable description of a remote model; calling it in the
worker process returns a client, which is the explainer's ``predict_fn``.

Source: Open Inference Protocol, ``inference_rest.md`` ("Inference", "Inference Request
JSON Object") and ``open_inference_grpc.proto`` (``ModelInfer``).
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import orjson

from protos.codecs.grpc import CONTENTS_FIELD
from protos.errors import InferenceError, UpstreamUnavailableError
from protos.protocol import DATATYPES, dtype_of
from protos.server.tls import ClientTls

__all__ = ["ModelEndpoint", "RestOipClient", "GrpcOipClient", "connect"]



@dataclass(frozen=True, slots=True)
class ModelEndpoint:
    """Where and how to ask a remote model for predictions.

    Attributes:
        url: ``http[s]://host:port`` (REST) or ``grpc[s]://host:port`` (gRPC).
        model: OIP model name.
        input_name: name of the input tensor.
        input_datatype: OIP datatype of the input (rows are cast to it), e.g. ``FP32``.
        output_name: name of the requested output, e.g. ``probabilities``.
        model_version: OIP model version, or ``None`` for the default.
        timeout_s: seconds allowed per batch request.
        max_rows_per_call: larger batches are sent as consecutive calls of at most this
            many rows, so that live predictions queued at the same model run between
            them instead of waiting behind one huge batch.
        ca_file: PEM CA bundle for ``https``/``grpcs`` (None: the system's CAs).
        client_cert: PEM client certificate (mTLS), with ``client_key``.
        client_key: PEM key of ``client_cert``.
        token: bearer token sent to the server, or None.
    """

    url: str
    model: str
    input_name: str = "input-0"
    input_datatype: str = "FP32"
    output_name: str = "probabilities"
    model_version: str | None = None
    timeout_s: float = 30.0
    max_rows_per_call: int = 1024
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    token: str | None = field(default=None, repr=False)

    def tls(self) -> ClientTls:
        """What the client trusts and presents over TLS."""
        return ClientTls(self.ca_file, self.client_cert, self.client_key)

    def __call__(self) -> RestOipClient | GrpcOipClient:
        """Open a client (the explainer's ``predict_fn``) in the calling process."""
        return connect(self)


def connect(endpoint: ModelEndpoint) -> RestOipClient | GrpcOipClient:
    """A REST or gRPC client for ``endpoint``, chosen by its URL scheme.

    Raises:
        ValueError: the scheme is neither http nor grpc.
    """
    scheme = urlsplit(endpoint.url).scheme
    if scheme in ("http", "https"):
        return RestOipClient(endpoint)
    if scheme in ("grpc", "grpcs"):
        return GrpcOipClient(endpoint)
    raise ValueError(f"unsupported model URL {endpoint.url!r}: use http://host:port or grpc://")


def _unreachable(endpoint: ModelEndpoint, why: object) -> UpstreamUnavailableError:
    """The error of an unreachable server: it names the model, never the address
    (explanation records are readable by callers with ``decisions:read``)."""
    reason = why if isinstance(why, str) else type(why).__name__
    return UpstreamUnavailableError(f"{endpoint.model}: server unreachable ({reason})")


class RestOipClient:
    """Batch ``predict_fn`` over OIP REST: ``POST /v2/models/{model}[/versions/{v}]/infer``.

    One keep-alive ``http.client`` connection, reopened once if the server closed it.
    Not thread-safe (one per worker process).
    """

    def __init__(self, endpoint: ModelEndpoint) -> None:
        parts = urlsplit(endpoint.url)
        if parts.hostname is None:
            raise ValueError(f"model URL {endpoint.url!r} has no host")
        self.endpoint = endpoint
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._https else 80)
        self._dtype = dtype_of(endpoint.input_datatype)
        version = f"/versions/{quote(endpoint.model_version)}" if endpoint.model_version else ""
        self._path = f"/v2/models/{quote(endpoint.model)}{version}/infer"
        self._conn: http.client.HTTPConnection | None = None
        self.calls = 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Predict a batch.

        Args:
            X: ``[k, n_features]`` rows (cast to the endpoint's input datatype).

        Returns:
            The requested output, shaped as the server declares (``[k, classes]``).

        Raises:
            UpstreamUnavailableError: the server could not be reached.
            InferenceError: the server answered with an error or without the output.
        """
        rows = self.endpoint.max_rows_per_call
        if len(X) > rows:
            return np.concatenate([self(X[i : i + rows]) for i in range(0, len(X), rows)])
        X = np.ascontiguousarray(X, dtype=self._dtype)
        body = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": self.endpoint.input_name,
                        "shape": list(X.shape),
                        "datatype": self.endpoint.input_datatype,
                        "data": X.ravel(),
                    }
                ],
                "outputs": [{"name": self.endpoint.output_name}],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        self.calls += 1
        status, payload = self._post(body)
        return self._decode(status, payload)

    def close(self) -> None:
        """Close the connection (reopened by the next call)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post(self, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if self.endpoint.token:
            headers["Authorization"] = f"Bearer {self.endpoint.token}"
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request("POST", self._path, body=body, headers=headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError) as exc:
                self.close()
                if attempt:
                    raise _unreachable(self.endpoint, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise _unreachable(self.endpoint, exc) from exc
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.endpoint.timeout_s,
                context=self.endpoint.tls().ssl_context(),
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.endpoint.timeout_s)

    def _decode(self, status: int, payload: bytes) -> np.ndarray:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            doc = {}
        if status != 200:
            message = doc.get("error", payload[:200].decode(errors="replace"))
            raise InferenceError(f"{self.endpoint.model}: HTTP {status}: {message}")
        for output in doc.get("outputs", []):
            if output.get("name") == self.endpoint.output_name:
                dtype = DATATYPES.get(output.get("datatype", "FP64"), np.dtype(np.float64))
                return np.asarray(output["data"], dtype=dtype).reshape(output["shape"])
        raise InferenceError(f"{self.endpoint.model}: no output {self.endpoint.output_name!r}")


class GrpcOipClient:
    """Batch ``predict_fn`` over OIP gRPC (``inference.GRPCInferenceService/ModelInfer``).

    Uses ``protos.open_inference_pb2`` / ``protos.open_inference_pb2_grpc`` (imported
    lazily, with grpcio). The input is sent in the typed ``contents`` field; the output is
    read from ``raw_output_contents`` when the server uses it, else from ``contents``.
    """

    def __init__(self, endpoint: ModelEndpoint) -> None:
        import grpc

        from protos import open_inference_pb2, open_inference_pb2_grpc

        parts = urlsplit(endpoint.url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"model URL {endpoint.url!r} needs host and port")
        self.endpoint = endpoint
        self._pb = open_inference_pb2
        self._grpc = grpc
        self._dtype = dtype_of(endpoint.input_datatype)
        self._field = CONTENTS_FIELD.get(endpoint.input_datatype)
        if self._field is None:
            raise ValueError(f"gRPC client cannot send datatype {endpoint.input_datatype}")
        target = f"{parts.hostname}:{parts.port}"
        if parts.scheme == "grpcs":
            self._channel = grpc.secure_channel(target, endpoint.tls().grpc_credentials())
        else:
            self._channel = grpc.insecure_channel(target)
        token = endpoint.token
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self.calls = 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Predict a batch (see :meth:`RestOipClient.__call__`; same errors)."""
        rows = self.endpoint.max_rows_per_call
        if len(X) > rows:
            return np.concatenate([self(X[i : i + rows]) for i in range(0, len(X), rows)])
        X = np.ascontiguousarray(X, dtype=self._dtype)
        request = self._request(X)
        self.calls += 1
        try:
            response = self._stub.ModelInfer(request, timeout=self.endpoint.timeout_s,
                                             metadata=self._metadata)
        except self._grpc.RpcError as exc:
            code = exc.code()
            if code in (self._grpc.StatusCode.UNAVAILABLE, self._grpc.StatusCode.DEADLINE_EXCEEDED):
                raise _unreachable(self.endpoint, code.name) from exc
            raise InferenceError(f"{self.endpoint.model}: {code.name}: {exc.details()}") from exc
        return self._decode(response)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _request(self, X: np.ndarray) -> Any:
        pb = self._pb
        tensor = pb.ModelInferRequest.InferInputTensor(
            name=self.endpoint.input_name,
            datatype=self.endpoint.input_datatype,
            shape=list(X.shape),
        )
        getattr(tensor.contents, self._field).extend(X.ravel().tolist())
        return pb.ModelInferRequest(
            model_name=self.endpoint.model,
            model_version=self.endpoint.model_version or "",
            inputs=[tensor],
            outputs=[
                pb.ModelInferRequest.InferRequestedOutputTensor(name=self.endpoint.output_name)
            ],
        )

    def _decode(self, response: Any) -> np.ndarray:
        for i, output in enumerate(response.outputs):
            if output.name != self.endpoint.output_name:
                continue
            dtype = DATATYPES.get(output.datatype, np.dtype(np.float64))
            shape = list(output.shape)
            if len(response.raw_output_contents) > i:
                flat = np.frombuffer(response.raw_output_contents[i], dtype=dtype.newbyteorder("<"))
            else:
                field = CONTENTS_FIELD.get(output.datatype, "fp64_contents")
                flat = np.asarray(getattr(output.contents, field), dtype=dtype)
            return flat.astype(dtype).reshape(shape)
        raise InferenceError(f"{self.endpoint.model}: no output {self.endpoint.output_name!r}")
