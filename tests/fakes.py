"""Fakes shared by the server, gateway and codec tests: tiny real wrappers and targets.

* :class:`CreditLikeWrapper`: the credit models' contract (``input`` FP32 [-1, 20] ->
  ``label`` INT64 [-1], ``probabilities`` FP32 [-1, 2]) with a deterministic rule and an
  optional sleep (a slow pod) or failure (an erroring pod).
* :class:`GatedLoadWrapper`: ``load`` blocks until an event is set (a loading pod).
* :class:`EchoTarget`: a Target that answers every input back as an output of the same
  name (any datatype), for transport round trips.
* :class:`RaisingTarget`: a Target whose ``infer`` raises a given exception.
* :class:`RuleCreditWrapper` and :func:`fairness_rows`: a world whose truth is known
  from each row, and models that err on chosen rows or refuse a chosen group (the
  fairness tests' fair and biased models).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    TensorMetadata,
)
from wrappers.base import ModelWrapper
from wrappers.settings import ModelSettings

__all__ = [
    "CREDIT_INPUTS",
    "CREDIT_OUTPUTS",
    "CreditLikeWrapper",
    "EchoTarget",
    "GatedLoadWrapper",
    "RaisingTarget",
    "credit_like_settings",
    "expected_credit_like",
    "model_pod",
    "http_call",
    "SlowCreditWrapper",
    "RuleCreditWrapper",
    "fairness_rows",
]

CREDIT_INPUTS = [TensorMetadata("input", "FP32", [-1, 20])]
CREDIT_OUTPUTS = [
    TensorMetadata("label", "INT64", [-1]),
    TensorMetadata("probabilities", "FP32", [-1, 2]),
]


def expected_credit_like(x: np.ndarray) -> dict[str, np.ndarray]:
    """What :class:`CreditLikeWrapper` answers for rows ``x`` (FP32 [n, 20])."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(x, np.float32).mean(axis=1)))
    probabilities = np.stack([1 - p, p], axis=1).astype(np.float32)
    return {"label": (p > 0.5).astype(np.int64), "probabilities": probabilities}


class CreditLikeWrapper(ModelWrapper):
    """The credit contract with a fixed rule; sleeps ``delay_s`` per predict call and
    raises ``fail`` when set.

    Args:
        delay_s: seconds each predict call sleeps (a slow pod).
        fail: exception raised by predict, or None.
        inputs: declared inputs (override to build a pod with a different contract).
    """

    platform = "test"

    def __init__(
        self,
        delay_s: float = 0.0,
        fail: Exception | None = None,
        inputs: list[TensorMetadata] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.inputs = inputs or CREDIT_INPUTS
        self.calls = 0

    def load(self) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        x = inputs["input"].reshape(len(inputs["input"]), -1)
        return expected_credit_like(x)

    def metadata(self) -> ModelMetadata:
        return ModelMetadata("credit-like", self.platform, list(self.inputs), CREDIT_OUTPUTS)


class GatedLoadWrapper(CreditLikeWrapper):
    """A :class:`CreditLikeWrapper` whose ``load`` waits until :attr:`gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def load(self) -> None:
        self.gate.wait(30)


def credit_like_settings(name: str, version: str | None = "1", **kwargs) -> ModelSettings:
    """Settings for a fake pod (no batching wait, so latencies are the model's)."""
    return ModelSettings(name=name, version=version, max_batch_wait_ms=0, **kwargs)


class EchoTarget:
    """A Target answering each input back as an output of the same name, datatype and
    shape (with its parameters); the request parameters are echoed too."""

    def __init__(self, name: str = "echo", inputs: list[TensorMetadata] | None = None) -> None:
        self.name = name
        self._inputs = inputs or []

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        outputs = [
            Tensor(t.name, t.datatype, t.shape, t.data, dict(t.parameters))
            for t in request.inputs
        ]
        if request.outputs is not None:
            wanted = {o.name for o in request.outputs}
            outputs = [t for t in outputs if t.name in wanted]
        return InferenceResponse(self.name, outputs, id=request.id,
                                 parameters=dict(request.parameters))

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(self.name, "echo", list(self._inputs), list(self._inputs))

    def ready(self) -> bool:
        return True


class RaisingTarget:
    """A Target whose ``infer`` raises ``error`` (set it per request)."""

    def __init__(self, name: str = "raising") -> None:
        self.name = name
        self.error: BaseException = RuntimeError("boom")

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        raise self.error

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(self.name, "test", CREDIT_INPUTS, CREDIT_OUTPUTS)

    def ready(self) -> bool:
        return True


def model_pod(wrapper: ModelWrapper, settings: ModelSettings, options=None):
    """A :class:`~tests.servers.ServerThread` factory argument serving ``wrapper`` as a
    wrapper pod does (``arbiter serve-model``): load on startup, unload on cleanup."""
    from protos.registry import ModelRegistry
    from protos.server.app import Server
    from tests.servers import local_options
    from wrappers.target import ModelTarget

    def factory():
        target = ModelTarget(wrapper, settings)
        return Server(
            ModelRegistry([target]), options or local_options(),
            on_startup=[target.load], on_cleanup=[target.unload],
        )

    return factory


class SlowCreditWrapper(CreditLikeWrapper):
    """A :class:`CreditLikeWrapper` loadable by ``arbiter serve-model --framework
    tests.fakes:SlowCreditWrapper --model FILE``: FILE holds the predict delay in
    seconds."""

    def __init__(self, model_path, settings=None) -> None:
        from pathlib import Path

        super().__init__(delay_s=float(Path(model_path).read_text().strip() or 0))


def http_call(
    method: str, url: str, body: bytes | object | None = None,
    headers: dict[str, str] | None = None, timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call with urllib: ``(status, headers, body)``, also for error statuses.
    A ``body`` that is not bytes is sent as JSON."""
    import json
    import urllib.error
    import urllib.request

    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def fairness_rows(n: int, female_every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Credit-like rows (FP32 [n, 20]) and their truth (INT64 [n], 1 = repaid).

    Every ``female_every``-th row is a woman (column 8, ``personal_status_and_sex``,
    code 0), the others men (code 3); column 12 is the age (19-75), column 19 the
    foreign-worker flag. Column 2 counts the rows of each sex (``k``): a row repaid when
    ``k % 10 < 7`` (column 4, the amount, is 1,000 then, else 9,000), so each sex
    repays 70 % of the time and a model whose errors depend on ``k`` errs equally
    often in both.
    """
    x = np.zeros((n, 20), np.float32)
    seen = {0: 0, 3: 0}
    for i in range(n):
        sex = 0 if i % female_every == 0 else 3
        k = seen[sex]
        seen[sex] += 1
        x[i, 2], x[i, 8], x[i, 12], x[i, 19] = k, sex, 19 + (i * 7) % 57, i % 3 == 0
        x[i, 4] = 1000.0 if k % 10 < 7 else 9000.0
    return x, (x[:, 4] < 5000).astype(np.int64)


class RuleCreditWrapper(CreditLikeWrapper):
    """The credit contract over :func:`fairness_rows`: the truth (amount under 5,000),
    wrong on the rows whose ``k % err_every == 0`` (none when 0), and refusing every row
    whose column ``refuse_column`` equals ``refuse_value`` (when set).

    Args:
        err_every: one row in this many (by ``k``) is answered wrongly; 0: none.
        refuse_column: column of the refused group, or None.
        refuse_value: its value.
    """

    def __init__(self, err_every: int = 0, refuse_column: int | None = None,
                 refuse_value: float = 0.0) -> None:
        super().__init__()
        self.err_every = err_every
        self.refuse_column = refuse_column
        self.refuse_value = refuse_value

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["input"].reshape(len(inputs["input"]), -1)
        label = (x[:, 4] < 5000).astype(np.int64)
        if self.err_every:
            wrong = x[:, 2].astype(np.int64) % self.err_every == 0
            label = np.where(wrong, 1 - label, label)
        if self.refuse_column is not None:
            label = np.where(x[:, self.refuse_column] == self.refuse_value, 0, label)
        p = label.astype(np.float32) * 0.8 + 0.1
        return {"label": label, "probabilities": np.stack([1 - p, p], axis=1)}
