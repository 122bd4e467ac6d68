"""Bad input over both transports gets the status of docs/protocol.md ("Our decisions")
and, over REST, an ``{"error": str}`` body naming the tensor (and the value where there
is one); no input is changed on the way in, no request makes the server allocate what
it did not send, and the server keeps serving afterwards.

Each case is one row, sent as REST JSON, as REST with the binary tensor extension where
that form can express it, and as gRPC where that can. Memory-bomb rows also hold the
server's peak RSS growth under 10 MB (the servers run in this process)."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import psutil
import pytest

from protos import open_inference_pb2 as pb
from protos import open_inference_pb2_grpc as pb_grpc
from protos.codecs import binary
from protos.codecs import json as jsonc
from protos.protocol import ModelMetadata, TensorMetadata
from protos.registry import ModelRegistry
from protos.server.app import Server, ServerOptions
from tests.fakes import CreditLikeWrapper, credit_like_settings, http_call, model_pod
from tests.servers import ServerThread, local_options
from wrappers.base import ModelWrapper
from wrappers.settings import ModelSettings
from wrappers.target import ModelTarget

MODEL = "credit-gbm"
ROW = [0.5] * 20
TYPED = {"int64": "INT64", "int32": "INT32", "fp16": "FP16"}
"""Models of the typed pod: name -> datatype of its input ``x`` and output ``y``."""
BOMB_LIMIT_BYTES = 10 * 2**20


def _tensor(name="input", datatype="FP32", shape=(1, 20), data=None, **extra) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape),
            "data": ROW if data is None else data, **extra}


def _pb(name="input", datatype="FP32", shape=(1, 20), raw: bytes | None = None,
        model=MODEL, version="", outputs=()) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model, model_version=version)
    message.inputs.add(name=name, datatype=datatype, shape=list(shape))
    message.raw_input_contents.append(
        np.asarray(ROW, np.float32).tobytes() if raw is None else raw)
    for out in outputs:
        message.outputs.add(name=out)
    return message


def _binary(doc: dict, *chunks: bytes) -> tuple[bytes, int]:
    """A binary-extension body: ``doc`` as the JSON header, then ``chunks``."""
    header = jsonc.dumps(doc)
    return b"".join([header, *chunks]), len(header)


def _raw_input(name: str, datatype: str, shape, raw: bytes, **extra) -> dict:
    """A request whose one input travels in the binary section."""
    return {"inputs": [{"name": name, "datatype": datatype, "shape": list(shape),
                        "parameters": {"binary_data_size": len(raw)}}], **extra}


class Case:
    """One bad input: a REST body (bytes or doc) and path, a binary-extension body
    ``(body, header_length)`` and a gRPC request (each ``None`` when that form cannot
    express it), the expected statuses, the words the message must hold (the tensor,
    and the value where there is one), the pod that serves it, and whether it is a
    memory bomb."""

    def __init__(self, rest, grpc_message, status: int, code: grpc.StatusCode,
                 path: str = f"/v2/models/{MODEL}/infer", *, binary=None,
                 says: tuple[str, ...] = (), pod: str = "gbm_pod", bomb: bool = False) -> None:
        self.rest, self.grpc_message, self.status, self.code, self.path = (
            rest, grpc_message, status, code, path)
        self.binary, self.says, self.pod, self.bomb = binary, says, pod, bomb


def _typed(model: str, rest, grpc_message, binary, says: tuple[str, ...]) -> Case:
    """A 400 case for one of the typed pod's models."""
    return Case(rest, grpc_message, 400, INVALID, f"/v2/models/{model}/infer",
                binary=binary, says=says, pod="typed_pod")


def _conversion(model: str, datatype: str, values: np.ndarray, says: tuple[str, ...]) -> Case:
    """Values of ``datatype`` sent to ``model``, whose input has another datatype."""
    shape, raw = [1, values.size], values.tobytes()
    doc = {"inputs": [_tensor("x", datatype, shape, values.tolist())]}
    return _typed(model, doc, _pb("x", datatype, shape, raw, model),
                  _binary(_raw_input("x", datatype, shape, raw), raw), says)


def _with_parameter(level: str, value) -> dict:
    """A valid request with parameter ``k`` of ``value`` at ``level``."""
    doc: dict = {"inputs": [_tensor()], "outputs": [{"name": "label"}]}
    target = {"request": doc, "input": doc["inputs"][0], "output": doc["outputs"][0]}[level]
    target["parameters"] = {"k": value}
    return doc


def _pb_with_empty_parameter(level: str) -> pb.ModelInferRequest:
    """The gRPC form of a null parameter: an ``InferParameter`` with no value set."""
    message = _pb(outputs=["label"])
    holder = {"request": message, "input": message.inputs[0],
              "output": message.outputs[0]}[level]
    holder.parameters["k"].SetInParent()
    return message


def _parameter_cases() -> dict[str, Case]:
    cases = {}
    for level, names in (("request", ()), ("input", ("'input'",)), ("output", ("'label'",))):
        for kind, value in (("null", None), ("object", {"a": 1}), ("list", [1])):
            doc = _with_parameter(level, value)
            cases[f"parameter-{kind}-{level}"] = Case(
                doc, _pb_with_empty_parameter(level) if kind == "null" else None,
                400, INVALID, binary=_binary(doc), says=("'k'", *names))
    return cases


def _pb_mixed_contents() -> pb.ModelInferRequest:
    message = _pb()
    message.inputs[0].contents.fp32_contents.extend(ROW)
    return message


def _pb_duplicate_output() -> pb.ModelInferRequest:
    return _pb(outputs=["label", "label"])


def _pb_int8_contents(value: int) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=MODEL)
    tensor = message.inputs.add(name="input", datatype="INT8", shape=[1, 20])
    tensor.contents.int_contents.extend([value] + [0] * 19)
    return message


def _deep_body(depth: int) -> bytes:
    """A request whose BYTES data is nested ``depth`` lists deep (written by hand: the
    json modules refuse to serialise that deep)."""
    head = b'{"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": '
    return head + b"[" * depth + b'"a"' + b"]" * depth + b"}]}"


def _bytes_bomb(shape: list[int]) -> Case:
    """BYTES of ``shape`` with 3 bytes of data: the shape claims more than was sent."""
    doc = {"inputs": [_tensor(datatype="BYTES", shape=shape, data=["abc"])]}
    return Case(doc, _pb(datatype="BYTES", shape=shape, raw=b"abc"), 400, INVALID,
                binary=_binary(_raw_input("input", "BYTES", shape, b"abc"), b"abc"),
                says=("'input'", str(shape[0])), bomb=True)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
ROW_BYTES = np.asarray(ROW, np.float32).tobytes()
DEEP_BODY = _deep_body(1000)
CASES: dict[str, Case] = {
    "malformed-json": Case(b'{"inputs": [', None, 400, INVALID),
    "body-not-object": Case(b"[1, 2]", None, 400, INVALID),
    "inputs-missing": Case({"id": "1"}, None, 400, INVALID),
    "data-missing": Case({"inputs": [{k: v for k, v in _tensor().items() if k != "data"}]},
                         _pb(raw=b""), 400, INVALID),
    "data-not-a-list": Case({"inputs": [_tensor(data="0.5")]}, None, 400, INVALID),
    "shape-product-mismatch": Case({"inputs": [_tensor(data=ROW[:19])]},
                                   _pb(raw=np.zeros(19, np.float32).tobytes()), 400, INVALID),
    "wrong-rank": Case({"inputs": [_tensor(shape=[20])]}, _pb(shape=[20]), 400, INVALID),
    "wrong-dimension": Case({"inputs": [_tensor(shape=[2, 10])]}, _pb(shape=[2, 10]),
                            400, INVALID),
    "negative-dimension": Case({"inputs": [_tensor(shape=[-1, 20])]}, None, 400, INVALID),
    "lossy-fp64": Case({"inputs": [_tensor(datatype="FP64", data=[0.1] * 20)]},
                       _pb(datatype="FP64", raw=np.full(20, 0.1).tobytes()), 400, INVALID),
    "lossy-int64": Case({"inputs": [_tensor(datatype="INT64", data=[2**30 + 1] * 20)]},
                        _pb(datatype="INT64", raw=np.full(20, 2**30 + 1).tobytes()),
                        400, INVALID),
    "bool-for-fp32": Case({"inputs": [_tensor(datatype="BOOL", data=[True] * 20)]},
                          _pb(datatype="BOOL", raw=b"\x01" * 20), 400, INVALID),
    "unknown-datatype": Case({"inputs": [_tensor(datatype="FLOAT")]},
                             _pb(datatype="FLOAT"), 400, INVALID),
    "unknown-input": Case({"inputs": [_tensor(name="features")]}, _pb(name="features"),
                          400, INVALID),
    "unknown-output": Case({"inputs": [_tensor()], "outputs": [{"name": "score"}]},
                           _pb(outputs=["score"]), 400, INVALID),
    "zero-size-batch": Case({"inputs": [_tensor(shape=[0, 20], data=[])]},
                            _pb(shape=[0, 20], raw=b""), 400, INVALID),
    "unknown-model": Case({"inputs": [_tensor()]}, _pb(model="nope"), 404,
                          grpc.StatusCode.NOT_FOUND, "/v2/models/nope/infer"),
    "unknown-version": Case({"inputs": [_tensor()]}, _pb(version="9"), 404,
                            grpc.StatusCode.NOT_FOUND, f"/v2/models/{MODEL}/versions/9/infer"),
    # No value is changed on the way in.
    "uint64-max-to-int64": _conversion(
        "int64", "UINT64", np.array([2**64 - 1], np.uint64), ("'x'", "18446744073709551615")),
    "uint32-max-to-int32": _conversion(
        "int32", "UINT32", np.array([4294967295], np.uint32), ("'x'", "4294967295")),
    "fp16-overflow": _typed(
        "fp16", {"inputs": [_tensor("x", "FP16", [1, 1], [70000])]},
        _pb("x", "FP32", [1, 1], np.float32([70000]).tobytes(), "fp16"),
        _binary(_raw_input("x", "FP32", [1, 1], np.float32([70000]).tobytes()),
                np.float32([70000]).tobytes()),
        ("'x'", "70000")),
    "fp32-overflow": Case(
        {"inputs": [_tensor(data=[1e39] + ROW[1:])]},
        _pb(datatype="FP64", raw=np.array([1e39] + ROW[1:]).tobytes()), 400, INVALID,
        binary=_binary(_raw_input("input", "FP64", [1, 20], b"\0" * 160),
                       np.array([1e39] + ROW[1:]).tobytes()),
        says=("'input'", "1e+39")),
    "int8-contents-out-of-range": Case(
        {"inputs": [_tensor(datatype="INT8", data=[300] + [0] * 19)]},
        _pb_int8_contents(300), 400, INVALID, says=("'input'", "300")),
    "bool-byte-not-0-or-1": Case(
        {"inputs": [_tensor(datatype="BOOL", data=[2] + [0] * 19)]},
        _pb(datatype="BOOL", raw=b"\x02" + b"\x00" * 19), 400, INVALID,
        binary=_binary(_raw_input("input", "BOOL", [1, 20], b"\0" * 20),
                       b"\x02" + b"\x00" * 19),
        says=("'input'", "2")),
    "boolean-in-numbers": Case({"inputs": [_tensor(data=[True] + ROW[1:])]}, None, 400,
                               INVALID, says=("'input'", "True")),
    "binary-size-with-data": Case(
        {"inputs": [_tensor(parameters={"binary_data_size": 80})]}, _pb_mixed_contents(),
        400, INVALID, binary=_binary({"inputs": [_tensor(parameters={
            "binary_data_size": 80})]}, ROW_BYTES), says=("'input'",)),
    "duplicate-output": Case(
        {"inputs": [_tensor()], "outputs": [{"name": "label"}, {"name": "label"}]},
        _pb_duplicate_output(), 400, INVALID,
        binary=_binary({"inputs": [_tensor()],
                        "outputs": [{"name": "label"}, {"name": "label"}]}),
        says=("'label'",)),
    **_parameter_cases(),
    "nested-shape-mismatch": Case(
        {"inputs": [_tensor(data=[ROW[:10], ROW[10:]])]}, None, 400, INVALID,
        binary=_binary({"inputs": [_tensor(data=[ROW[:10], ROW[10:]])]}),
        says=("'input'", "[1, 20]")),
    "shape-product-overflow": Case(
        {"inputs": [_tensor(shape=[2**62, 2**62, 0], data=[])]},
        _pb(shape=[2**62, 2**62, 0], raw=b""), 400, INVALID, says=("'input'",)),
    "shape-too-many-dimensions": Case(
        {"inputs": [_tensor(shape=[1] * 40, data=[0.5])]}, _pb(shape=[1] * 40, raw=b"\0" * 4),
        400, INVALID, says=("'input'",)),
    # No request makes the server allocate what it did not send.
    "bytes-shape-1e8": _bytes_bomb([10**8]),
    "bytes-shape-1e12": _bytes_bomb([10**12]),
    "bytes-nested-1000-deep": Case(
        DEEP_BODY, None, 400, INVALID, binary=(DEEP_BODY, len(DEEP_BODY)),
        says=("'input'",), bomb=True),
}


class _IdentityWrapper(ModelWrapper):
    """``y = x``, both ``datatype`` [-1, -1]."""

    platform = "test"

    def __init__(self, name: str, datatype: str) -> None:
        self.name, self.datatype = name, datatype

    def load(self) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"]}

    def metadata(self) -> ModelMetadata:
        spec = [-1, -1]
        return ModelMetadata(self.name, self.platform, [TensorMetadata("x", self.datatype, spec)],
                             [TensorMetadata("y", self.datatype, spec)])


@pytest.fixture(scope="module")
def typed_pod() -> Iterator[ServerThread]:
    """One pod serving the :data:`TYPED` identity models."""

    def factory() -> Server:
        targets = [ModelTarget(_IdentityWrapper(name, datatype),
                               ModelSettings(name=name, max_batch_wait_ms=0))
                   for name, datatype in TYPED.items()]
        return Server(ModelRegistry(targets), local_options(),
                      on_startup=[t.load for t in targets],
                      on_cleanup=[t.unload for t in targets])

    with ServerThread(factory) as pod:
        yield pod


def _grpc_call(target: str, message) -> grpc.RpcError | object:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            return stub.ModelInfer(message, timeout=10)
        except grpc.RpcError as exc:
            return exc


def _peak_rss_bytes() -> int | None:
    """This process's peak RSS since the last :func:`_reset_peak_rss` (Linux), or
    ``None`` where the peak cannot be reset."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _rss_growth(send: Callable[[], object]) -> int:
    """Bytes the process's RSS grew by while ``send()`` ran, measured once before and
    once after with a garbage collection each time. The peak (VmHWM, reset first) is
    the "after" where Linux offers it: a bomb frees its allocation before the 400 is
    written, so the RSS after the reply alone would not see it."""
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    peaked = _reset_peak_rss()
    send()
    gc.collect()
    after = process.memory_info().rss
    peak = _peak_rss_bytes() if peaked else None
    return max(after, peak or 0) - before


def _sent(case: Case, send: Callable[[], tuple]) -> tuple:
    """``send()``'s reply; for a memory bomb, also assert the RSS stayed flat (after
    one unmeasured call, so first-use costs of clients and servers are not counted)."""
    if not case.bomb:
        return send()
    send()
    replies: list[tuple] = []
    growth = _rss_growth(lambda: replies.append(send()))
    assert growth < BOMB_LIMIT_BYTES, f"RSS grew by {growth / 2**20:.1f} MB"
    return replies[0]


def _check_rest(case: Case, reply: tuple) -> None:
    status, headers, body = reply
    assert status == case.status, body
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert list(doc) == ["error"] and isinstance(doc["error"], str) and doc["error"]
    for words in case.says:
        assert words in doc["error"], doc["error"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_over_rest(request: pytest.FixtureRequest, case: str) -> None:
    c = CASES[case]
    pod = request.getfixturevalue(c.pod)
    _check_rest(c, _sent(c, lambda: http_call("POST", pod.http_url + c.path, c.rest)))


@pytest.mark.parametrize("case", sorted(k for k, c in CASES.items() if c.binary))
def test_bad_input_over_rest_binary(request: pytest.FixtureRequest, case: str) -> None:
    c = CASES[case]
    pod = request.getfixturevalue(c.pod)
    body, length = c.binary
    headers = {binary.HEADER: str(length), "Content-Type": "application/octet-stream"}
    _check_rest(c, _sent(c, lambda: http_call("POST", pod.http_url + c.path, body, headers)))


@pytest.mark.parametrize("case", sorted(k for k, c in CASES.items() if c.grpc_message))
def test_bad_input_over_grpc(request: pytest.FixtureRequest, case: str) -> None:
    c = CASES[case]
    pod = request.getfixturevalue(c.pod)
    (reply,) = _sent(c, lambda: (_grpc_call(pod.grpc_target, c.grpc_message),))
    assert isinstance(reply, grpc.RpcError), reply
    assert reply.code() == c.code, reply.details()
    assert reply.details()
    for words in c.says:
        assert words in reply.details(), reply.details()


@pytest.mark.parametrize("datatype", ["INT32", "INT16", "FP64", "FP16"])
def test_lossless_datatypes_are_converted(gbm_pod: ServerThread, datatype: str) -> None:
    values = np.arange(20) % 4 - 1.0  # small integers, exact in every datatype
    fp32 = {"inputs": [_tensor(data=values.tolist())]}
    other = {"inputs": [_tensor(datatype=datatype, data=values.astype(int).tolist()
                                if datatype.startswith("INT") else values.tolist())]}
    replies = [json.loads(http_call("POST", gbm_pod.http_url + f"/v2/models/{MODEL}/infer",
                                    doc)[2]) for doc in (fp32, other)]
    assert replies[1]["outputs"] == replies[0]["outputs"]
    raw = np.asarray(values, dtype=datatype.lower().replace("fp", "float")).tobytes()
    grpc_reply = _grpc_call(gbm_pod.grpc_target, _pb(datatype=datatype, raw=raw))
    assert not isinstance(grpc_reply, grpc.RpcError), grpc_reply
    np.testing.assert_array_equal(
        np.frombuffer(grpc_reply.raw_output_contents[1], "<f4"),
        np.asarray(replies[0]["outputs"][1]["data"], np.float32))


@pytest.mark.parametrize(("model", "datatype", "values"), [
    ("int64", "UINT64", [2**63 - 1, 0]),
    ("int32", "UINT32", [2**31 - 1, 7]),
    ("fp16", "FP32", [65504.0, -0.5]),
])
def test_values_at_the_edge_of_the_range_pass_unchanged(
    typed_pod: ServerThread, model: str, datatype: str, values: list
) -> None:
    doc = {"inputs": [_tensor("x", datatype, [1, 2], values)]}
    status, _, body = http_call("POST", f"{typed_pod.http_url}/v2/models/{model}/infer", doc)
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == values


def test_nested_data_following_the_shape_and_explicit_infinities_pass(
    gbm_pod: ServerThread, typed_pod: ServerThread
) -> None:
    url = gbm_pod.http_url + f"/v2/models/{MODEL}/infer"
    flat = json.loads(http_call("POST", url, {"inputs": [_tensor()]})[2])
    nested = json.loads(http_call("POST", url, {"inputs": [_tensor(data=[ROW])]})[2])
    assert nested["outputs"] == flat["outputs"]
    doc = {"inputs": [_tensor("x", "FP16", [1, 2], ["Infinity", "-Infinity"])]}
    status, _, body = http_call("POST", typed_pod.http_url + "/v2/models/fp16/infer", doc)
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == ["Infinity", "-Infinity"]


def test_server_still_serves_after_bad_input(
    request: pytest.FixtureRequest, gbm_pod: ServerThread
) -> None:
    for c in CASES.values():
        pod = request.getfixturevalue(c.pod)
        http_call("POST", pod.http_url + c.path, c.rest)
        if c.binary is not None:
            http_call("POST", pod.http_url + c.path, c.binary[0],
                      {binary.HEADER: str(c.binary[1])})
        if c.grpc_message is not None:
            _grpc_call(pod.grpc_target, c.grpc_message)
    status, _, body = http_call("POST", gbm_pod.http_url + f"/v2/models/{MODEL}/infer",
                                {"inputs": [_tensor()]})
    assert status == 200
    assert [o["name"] for o in json.loads(body)["outputs"]] == ["label", "probabilities"]
    reply = _grpc_call(gbm_pod.grpc_target, _pb())
    assert not isinstance(reply, grpc.RpcError)
    assert http_call("GET", gbm_pod.http_url + "/v2/health/ready")[0] == 200


@pytest.fixture(scope="module")
def small_pod() -> Iterator[ServerThread]:
    """A credit-like pod accepting bodies of at most 16 KiB and tensors of at most 1,000
    elements."""
    options = ServerOptions(host="127.0.0.1", http_port=0, grpc_port=0,
                            max_body_bytes=16 * 1024, max_tensor_elements=1000,
                            drain_timeout_s=1.0)
    with ServerThread(model_pod(CreditLikeWrapper(), credit_like_settings("small"),
                                options)) as pod:
        yield pod


def _rows(n: int) -> np.ndarray:
    return np.linspace(-1, 1, n * 20, dtype=np.float32).reshape(n, 20)


@pytest.mark.parametrize("send", [
    lambda url, x: http_call("POST", url, {"inputs": [_tensor(shape=x.shape,
                                                              data=x.ravel().tolist())]}),
    lambda url, x: http_call("POST", url, _binary_body(x)[0], _binary_body(x)[1]),
], ids=["json", "binary"])
def test_oversized_payload_is_413_over_rest(small_pod: ServerThread, send: Callable) -> None:
    url = small_pod.http_url + "/v2/models/small/infer"
    status, _, body = send(url, _rows(400))
    assert status == 413
    assert isinstance(json.loads(body)["error"], str)
    assert send(url, _rows(10))[0] == 200


def _binary_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    from protos.codecs import binary
    from protos.protocol import InferenceRequest, Tensor

    body, length = binary.request_to_binary(
        InferenceRequest("small", [Tensor.from_array("input", x)]))
    return body, {binary.HEADER: str(length), "Content-Type": "application/octet-stream"}


def test_oversized_payload_is_resource_exhausted_over_grpc(small_pod: ServerThread) -> None:
    big = _pb(model="small", shape=[400, 20], raw=_rows(400).tobytes())
    reply = _grpc_call(small_pod.grpc_target, big)
    assert isinstance(reply, grpc.RpcError)
    assert reply.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = _grpc_call(small_pod.grpc_target,
                    _pb(model="small", shape=[10, 20], raw=_rows(10).tobytes()))
    assert not isinstance(ok, grpc.RpcError)


def test_max_tensor_elements_is_a_server_option(small_pod: ServerThread) -> None:
    x = np.zeros((60, 20), np.float32)  # 1,200 elements, a small body
    url = small_pod.http_url + "/v2/models/small/infer"
    for status, _, body in (
        http_call("POST", url, {"inputs": [_tensor(shape=x.shape, data=x.ravel().tolist())]}),
        http_call("POST", url, *_binary_body(x)),
    ):
        assert status == 400
        assert "'input'" in json.loads(body)["error"]
        assert "limit of 1000" in json.loads(body)["error"]
    reply = _grpc_call(small_pod.grpc_target,
                       _pb(model="small", shape=[60, 20], raw=x.tobytes()))
    assert isinstance(reply, grpc.RpcError)
    assert reply.code() == INVALID and "limit of 1000" in reply.details()
    assert http_call("POST", url, *_binary_body(x[:50]))[0] == 200
