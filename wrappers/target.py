"""A local model as an OIP :class:`~protos.protocol.Target`.

Construction, as the ``arbiter serve-model`` CLI does it::

    settings = load_settings("models/lr.yaml")
    target = ModelTarget(build_wrapper(settings.framework, settings.uri, settings), settings)
    await target.load()                 # wrapper.load() in a thread; then ready() is True
    response = await target.infer(request)

``ModelTarget(wrapper, settings, *, executor=None)`` wraps ``wrapper`` in a
:class:`~wrappers.batching.BatchingWrapper` configured by ``settings.max_batch_size``,
``max_batch_wait_ms``, ``max_concurrency`` and ``max_queue_rows`` (pass an already
built ``BatchingWrapper`` to keep yours). A :class:`~protos.server.app.Server` serving
the target calls :meth:`ModelTarget.bind_metrics`, so its batch sizes and queue
rejections are exported.

All request validation lives here, once for every framework:

* unknown, duplicate or missing input; wrong rank; a dimension not matching the
  declared one; an empty batch; inputs disagreeing on the batch size -> 400;
* datatypes: an input of another datatype is converted when every value is exactly
  representable in the declared one (integers to integers in range or to floats,
  floats to wider or lossless narrower floats), otherwise 400 naming the value; BOOL
  and BYTES never convert; non-finite floats are passed to the model, and a finite
  value never becomes an infinity;
* an unknown requested output, or one requested twice -> 400; the model not loaded
  -> 503; a full batching queue -> 429;
* an output the model did not produce, or of the wrong shape -> 500; outputs are cast
  to the declared datatype.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from protos.codecs.limits import check_requested_outputs
from protos.errors import ArbiterError, InferenceError, InvalidRequestError, ModelNotReadyError
from protos.protocol import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    TensorMetadata,
    dtype_of,
    new_id,
)
from protos.statistics import ModelStatistics
from wrappers.base import ModelWrapper
from wrappers.batching import BatchingWrapper
from wrappers.settings import ModelSettings
from wrappers.timing import TimedArrays, TimedWrapper

if TYPE_CHECKING:
    from protos.server.metrics import ServerMetrics

__all__ = ["ModelTarget", "convert_datatype"]


class ModelTarget:
    """Serve one :class:`ModelWrapper` through the OIP ``Target`` interface.

    Args:
        wrapper: a framework wrapper (not yet loaded), or a ``BatchingWrapper``.
        settings: the model's settings (name, version, batching limits).
        executor: thread pool for predict calls; default a private one per model.

    Attributes:
        name: the model name (``settings.name``).
        statistics: Triton statistics of the model; this target records each served
            request's phases and each execution (the registry its outcome). Queue and
            compute_infer are told apart when the target builds its batcher
            (:mod:`wrappers.timing`); behind a given ``BatchingWrapper`` the whole
            batcher wait counts as compute_infer.
    """

    def __init__(
        self, wrapper: ModelWrapper, settings: ModelSettings, *, executor: Executor | None = None
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.statistics = ModelStatistics()
        self._model = wrapper  # probed directly, so the probe is not a served execution
        self._timed: TimedWrapper | None = None
        if isinstance(wrapper, BatchingWrapper):
            self.batcher = wrapper
        else:
            self._timed = TimedWrapper(wrapper, self.statistics)
            self.batcher = BatchingWrapper(
                self._timed, settings.max_batch_size, settings.max_batch_wait_ms,
                settings.max_concurrency, executor,
                max_queue_rows=settings.max_queue_rows, name=settings.name,
            )
        self._ready = False
        self._metadata = self._with_identity(self.batcher.metadata())
        self._inputs: dict[str, _Declared] = {}
        self._outputs: dict[str, _Declared] = {}
        self._all_outputs: list[tuple[str, dict]] = []

    async def load(self) -> None:
        """Load the model in a worker thread, then become ready.

        Raises:
            InferenceError: the wrapper could not load the artifact.
        """
        await asyncio.to_thread(self.batcher.load)
        self._metadata = self._with_identity(self.batcher.metadata())
        self._inputs = {t.name: _Declared.of(t) for t in self._metadata.inputs}
        self._outputs = {t.name: _Declared.of(t) for t in self._metadata.outputs}
        self._all_outputs = [(name, {}) for name in self._outputs]
        if self.settings.probe_on_load:
            await asyncio.to_thread(self._probe)
        self._ready = True

    def _probe(self) -> None:
        """Run one all-zero row through the model before reporting ready: a declared
        contract the model does not meet (wrong width, a missing output) fails the
        start instead of every request; it also warms the model up. Skipped for BYTES
        inputs, which have no neutral value.

        Raises:
            InferenceError: naming the declared contract and what the model did.
        """
        inputs = {}
        for spec in self._inputs.values():
            declared = spec.metadata
            if declared.datatype == "BYTES" or any(d < -1 for d in declared.shape):
                return
            inputs[declared.name] = np.zeros([1 if d == -1 else d for d in declared.shape],
                                             dtype=spec.dtype)
        try:
            arrays = self._model.predict(inputs)
            for name in self._outputs:
                self._output_tensor(name, {}, arrays)
        except Exception as exc:  # noqa: BLE001 - any failure here is a contract failure
            declared = [(s.metadata.name, s.metadata.datatype, s.metadata.shape)
                        for s in self._inputs.values()]
            message = exc.message if isinstance(exc, ArbiterError) else repr(exc)
            raise InferenceError(
                f"model {self.name!r} failed a probe row of its declared inputs {declared} "
                f"(set probe_on_load: false if it rejects all-zero rows): {message}"
            ) from None

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        """Export this model's batch sizes (``arbiter_batch_rows``) and batching-queue
        rejections (``arbiter_batch_queue_rejected_requests_total``) through the
        serving server's metrics."""
        self.batcher.on_batch = metrics.batch_size.labels(self.name).observe
        self.batcher.on_reject = metrics.queue_rejections.labels(self.name).inc

    async def unload(self) -> None:
        """Stop serving and release the model (in a worker thread)."""
        self._ready = False
        await asyncio.to_thread(self.batcher.unload)

    def ready(self) -> bool:
        """Whether :meth:`load` has finished and :meth:`unload` has not been called."""
        return self._ready

    @property
    def max_batch_size(self) -> int:
        """Most rows merged into one predict call; 0 when batching is off (1 row)."""
        size = self.batcher.max_batch_size
        return size if size > 1 else 0

    @property
    def max_queue_delay_us(self) -> int:
        """Longest wait of a request for its batch to fill, in microseconds."""
        return round(self.batcher.max_batch_wait_s * 1e6)

    def metadata(self) -> ModelMetadata:
        """OIP metadata: the wrapper's, named ``settings.name``, versioned by settings."""
        return self._metadata

    def _with_identity(self, metadata: ModelMetadata) -> ModelMetadata:
        versions = [self.settings.version] if self.settings.version else metadata.versions
        return ModelMetadata(self.name, metadata.platform, metadata.inputs, metadata.outputs,
                             versions, metadata.parameters)

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Validate ``request``, predict (batched) and build the response.

        Args:
            request: inputs named and shaped as :meth:`metadata` declares.

        Returns:
            The requested outputs (default: all declared), the request id (generated
            when absent) and the request ``parameters``.

        Raises:
            ModelNotReadyError: the model is not loaded.
            OverloadedError: the batching queue is full.
            InvalidRequestError: the request does not match the metadata (see module
                docstring).
            InferenceError: the model raised or produced an invalid output.
        """
        if not self._ready:
            raise ModelNotReadyError(f"model {self.name!r} is not ready")
        start = time.perf_counter_ns()
        inputs = self._validate_inputs(request)
        wanted = self._requested_outputs(request)
        submitted = time.perf_counter_ns()
        arrays = await self.batcher.submit(inputs)
        answered = time.perf_counter_ns()
        outputs = [self._output_tensor(n, p, arrays) for n, p in wanted]
        waited = answered - submitted
        infer_ns = self._infer_ns(arrays, waited)
        self.statistics.record_phases(
            queue_ns=waited - infer_ns, input_ns=submitted - start, infer_ns=infer_ns,
            output_ns=time.perf_counter_ns() - answered,
        )
        return InferenceResponse(
            model_name=self.name,
            outputs=outputs,
            model_version=self.settings.version,
            id=request.id or new_id(),
            parameters=dict(request.parameters),
        )

    def _infer_ns(self, arrays: dict, waited_ns: int) -> int:
        """The model-execution part of a request's batcher wait (see
        :mod:`wrappers.timing`)."""
        if isinstance(arrays, TimedArrays):
            return min(arrays.infer_ns, waited_ns)
        if self._timed is None:
            return waited_ns
        return min(self._timed.last_ns, waited_ns)

    def _validate_inputs(self, request: InferenceRequest) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for tensor in request.inputs:
            declared = self._inputs.get(tensor.name)
            if declared is None:
                raise InvalidRequestError(
                    f"unknown input {tensor.name!r} for model {self.name!r}; "
                    f"expected inputs {list(self._inputs)}")
            if tensor.name in arrays:
                raise InvalidRequestError(f"input {tensor.name!r} is given twice")
            arrays[tensor.name] = _check_input(tensor, declared)
        if len(arrays) != len(self._inputs):
            missing = [n for n in self._inputs if n not in arrays]
            raise InvalidRequestError(f"model {self.name!r} is missing inputs {missing}")
        if len(arrays) > 1:
            _check_batch(arrays)
        return arrays

    def _requested_outputs(self, request: InferenceRequest) -> list[tuple[str, dict]]:
        if request.outputs is None:
            return self._all_outputs
        check_requested_outputs(r.name for r in request.outputs)
        for requested in request.outputs:
            if requested.name not in self._outputs:
                raise InvalidRequestError(
                    f"unknown output {requested.name!r} requested from model {self.name!r}; "
                    f"it has outputs {list(self._outputs)}")
        return [(r.name, r.parameters) for r in request.outputs]

    def _output_tensor(self, name: str, parameters: dict, arrays: dict) -> Tensor:
        spec = self._outputs[name]
        array = arrays.get(name)
        if array is None:
            raise InferenceError(f"model {self.name!r} did not produce output {name!r}")
        if array.dtype != spec.dtype:
            array = array.astype(spec.dtype)
        shape = array.shape
        if not spec.fits(shape):
            raise InferenceError(
                f"model {self.name!r} produced output {name!r} with shape {list(shape)}; "
                f"declared {spec.metadata.shape}")
        return Tensor(name, spec.metadata.datatype, shape, array, dict(parameters))


class _Declared(NamedTuple):
    """A declared input or output, with what its checks need precomputed.

    Attributes:
        metadata: the declaration.
        dtype: numpy dtype of its datatype.
        rank: number of dimensions.
        fixed: ``(index, size)`` of every dimension that is not ``-1``.
    """

    metadata: TensorMetadata
    dtype: np.dtype
    rank: int
    fixed: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, metadata: TensorMetadata) -> _Declared:
        """The precomputed form of ``metadata``."""
        fixed = tuple((i, d) for i, d in enumerate(metadata.shape) if d != -1)
        return cls(metadata, dtype_of(metadata.datatype), len(metadata.shape), fixed)

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Same rank, and every fixed dimension equal (as ``TensorMetadata.accepts_shape``)."""
        if len(shape) != self.rank:
            return False
        for index, size in self.fixed:
            if shape[index] != size:
                return False
        return True


def _check_input(tensor: Tensor, spec: _Declared) -> np.ndarray:
    """Return the tensor's data as a declared-dtype array, or raise InvalidRequestError."""
    shape = tuple(tensor.shape)
    declared, dtype = spec.metadata, spec.dtype
    if not spec.fits(shape):
        if len(shape) != spec.rank:
            raise InvalidRequestError(
                f"input {tensor.name!r} has rank {len(shape)} (shape {list(shape)}); "
                f"expected rank {spec.rank}, shape {declared.shape}")
        raise InvalidRequestError(
            f"input {tensor.name!r} has shape {list(shape)}; expected {declared.shape}")
    if 0 in shape:
        raise InvalidRequestError(f"input {tensor.name!r} is empty (shape {list(shape)})")
    data = tensor.data
    if data.shape != shape:
        if data.size != np.prod(shape):
            raise InvalidRequestError(
                f"input {tensor.name!r} has {data.size} values; shape {list(shape)} "
                f"needs {int(np.prod(shape))}")
        data = data.reshape(shape)
    if data.dtype != dtype:
        data = convert_datatype(tensor.name, data, tensor.datatype, declared.datatype, dtype)
    return data


def _check_batch(arrays: dict[str, np.ndarray]) -> None:
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise InvalidRequestError(f"inputs disagree on the batch size: {sizes}")


def convert_datatype(
    name: str, data: np.ndarray, given: str, declared: str, dtype: np.dtype
) -> np.ndarray:
    """Convert input ``data`` of OIP datatype ``given`` to ``declared`` when lossless.

    Integers convert to any integer type when every value is in its range, and to any
    float type when every value is exactly representable; floats convert to any float
    type when every value survives the round trip (NaN and infinities are kept; a
    finite value never becomes an infinity). BOOL and BYTES convert to nothing and
    nothing converts to them.

    Args:
        name: input name, for messages.
        data: the array as sent.
        given: its OIP datatype.
        declared: the declared OIP datatype.
        dtype: numpy dtype of ``declared``.

    Returns:
        ``data`` as a ``dtype`` array.

    Raises:
        InvalidRequestError: the conversion is not allowed or would change a value
            (the message names the input and the first such value).
    """
    source = data.dtype
    allowed = (source.kind in "iu" and dtype.kind in "iuf") or (
        source.kind == "f" and dtype.kind == "f")
    if not allowed:
        raise InvalidRequestError(
            f"input {name!r} has datatype {given}; model expects {declared}")
    if dtype.kind in "iu":
        _check_int_range(name, data, given, declared, dtype)
        return data.astype(dtype)
    widening = np.can_cast(source, dtype, casting="safe") and not (
        # numpy calls int64 -> float64 "safe", but integers above 2**53 round.
        source.kind in "iu" and 2 * source.itemsize > dtype.itemsize)
    if widening:
        return data.astype(dtype)
    with np.errstate(all="ignore"):
        converted = data.astype(dtype)
    _check_exact(name, data, converted, given, declared)
    return converted


def _check_int_range(
    name: str, data: np.ndarray, given: str, declared: str, dtype: np.dtype
) -> None:
    """Every integer within ``dtype``'s range, compared exactly (as Python ints)."""
    if not data.size or np.can_cast(data.dtype, dtype, casting="safe"):
        return
    info = np.iinfo(dtype)
    low, high = int(data.min()), int(data.max())
    if low < info.min or high > info.max:
        value = low if low < info.min else high
        raise InvalidRequestError(
            f"input {name!r}: {given} value {value} is out of range for {declared}")


def _check_exact(
    name: str, data: np.ndarray, converted: np.ndarray, given: str, declared: str
) -> None:
    """``converted`` holds every value of ``data`` unchanged (NaN equal to NaN)."""
    overflow = np.isinf(converted) & np.isfinite(data)
    if overflow.any():
        value = data.flat[int(np.argmax(overflow))]
        raise InvalidRequestError(
            f"input {name!r}: {given} value {value} overflows {declared}")
    if data.dtype.kind in "iu":
        # Casting a float outside the integer range back is undefined: a rounded value
        # that left the range was changed by the conversion.
        info = np.iinfo(data.dtype)
        limit = 2.0 ** (info.bits - (info.min < 0))
        outside = (converted < -limit if info.min < 0 else converted < 0) | (converted >= limit)
        with np.errstate(all="ignore"):
            back = np.where(outside, 0, converted).astype(data.dtype)
        changed = outside | (back != data)
    else:
        back = converted.astype(data.dtype)
        changed = (back != data) & ~(np.isnan(back) & np.isnan(data))
    if changed.any():
        value = data.flat[int(np.argmax(changed))]
        raise InvalidRequestError(
            f"input {name!r}: {given} values are not exactly representable as "
            f"{declared} (value {value})")
