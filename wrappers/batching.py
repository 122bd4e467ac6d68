"""Adaptive batching of concurrent requests to one model.

:class:`BatchingWrapper` wraps a :class:`~wrappers.base.ModelWrapper`. Callers on the
event loop ``await batcher.submit(inputs)``; rows of concurrent callers are
concatenated along dimension 0 into one ``predict`` call that runs in a worker thread
(never on the event loop), and each caller gets back exactly its own rows.

Policy (in the spirit of Triton's dynamic batcher):

* At most ``max_concurrency`` predict calls run at once. While they run, new requests
  queue; when one finishes, the queue is flushed at once (those requests have already
  waited), up to ``max_batch_size`` rows per call.
* With a worker free, a request waits at most ``max_batch_wait_ms`` for others to join
  it; the batch goes as soon as it holds ``max_batch_size`` rows. With a wait of 0 and
  an empty queue a request runs at once, alone.
* A request of ``max_batch_size`` rows or more, or any request when
  ``max_batch_size == 1``, runs alone without merging (at once when a worker is free,
  otherwise in its turn in the queue).
* The queue is bounded: a request that would take the rows waiting past
  ``max_queue_rows`` is refused at once with
  :class:`~protos.errors.OverloadedError` (429 / RESOURCE_EXHAUSTED, ``Retry-After``)
  and counted through :attr:`BatchingWrapper.on_reject`. A request finding the queue
  empty is always admitted, so one larger than the bound is still served.
* Only requests whose inputs agree on names, dtypes and non-batch dimensions are
  merged; others go in a later batch.
* If ``predict`` raises, every caller of that batch gets an
  :class:`~protos.errors.InferenceError` (an :class:`~protos.errors.ArbiterError`
  raised by the model is passed on as is).

Fast models run on the event loop. Handing a call to a worker thread and waking the loop
when it ends costs 30-70 us of CPU on one core (measured: docs/benchmarks.md, "Where the
time goes"), more than a small tree ensemble's whole predict call (about 11 us for the
credit GBM). So once a model's predict calls are known to be fast (a moving average of
their measured duration under ``inline_below_us``, 200 us by default), calls run inline
on the event loop, one at a time, and a request that would have run at once, alone, waits
instead for the end of the current loop iteration, so that the requests that arrived
with it join its batch. The first calls, and every call of a model whose average
rises past the bound, go to the worker threads as above; ``inline_below_us=0`` keeps
every call there. Each duration enters the average clipped at four times the bound, so a
lone slow call (the process preempted mid-call on a busy core) leaves a fast model on
the loop while two in a row move it off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np

from protos.errors import ArbiterError, InferenceError, OverloadedError
from protos.protocol import ModelMetadata
from wrappers.base import ModelWrapper, framework_error

__all__ = ["BatchingWrapper", "DEFAULT_MAX_QUEUE_ROWS"]

Arrays = dict[str, np.ndarray]

DEFAULT_MAX_QUEUE_ROWS = 4096
"""Default bound of the rows waiting for a predict call."""

DEFAULT_INLINE_BELOW_US = 200.0
"""Default bound, in microseconds, of the average predict call run on the event loop."""

_SMOOTHING = 0.2
"""Weight of the latest call in the moving average of predict durations."""

_CLIP = 4.0
"""Each duration enters the average at most this many times the inline bound."""


class _Pending:
    """One queued request: its inputs, row count, merge key and result future."""

    __slots__ = ("inputs", "rows", "key", "future")

    def __init__(self, inputs: Arrays, rows: int, future: asyncio.Future[Arrays]) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = tuple([(n, a.dtype.str, a.shape[1:]) for n, a in inputs.items()])
        self.future = future


class BatchingWrapper(ModelWrapper):
    """A model wrapper that merges concurrent requests into batches.

    ``load``, ``unload``, ``metadata`` and the synchronous ``predict`` delegate to the
    inner wrapper; :meth:`submit` is the batched, asynchronous entry point.

    Args:
        inner: the framework wrapper.
        max_batch_size: most rows per predict call (>= 1; 1 disables merging).
        max_batch_wait_ms: longest wait, in ms, for a batch to fill while a worker is
            free (>= 0).
        max_concurrency: predict calls that may run at once (>= 1).
        executor: where predict runs; default a private pool of ``max_concurrency``
            threads, shut down by :meth:`unload`.
        max_queue_rows: most rows that may wait for a predict call (>= 1).
        name: the model's name, for messages.
        inline_below_us: predict calls run on the event loop while the moving average
            of their duration is under this many microseconds (>= 0; 0: never).

    Raises:
        ValueError: a limit is out of range.
    """

    def __init__(
        self,
        inner: ModelWrapper,
        max_batch_size: int = 64,
        max_batch_wait_ms: float = 2.0,
        max_concurrency: int = 1,
        executor: Executor | None = None,
        *,
        max_queue_rows: int = DEFAULT_MAX_QUEUE_ROWS,
        name: str = "model",
        inline_below_us: float = DEFAULT_INLINE_BELOW_US,
    ) -> None:
        if (max_batch_size < 1 or max_batch_wait_ms < 0 or max_concurrency < 1
                or max_queue_rows < 1 or inline_below_us < 0):
            raise ValueError("need max_batch_size >= 1, max_batch_wait_ms >= 0, "
                             "max_concurrency >= 1, max_queue_rows >= 1, "
                             "inline_below_us >= 0")
        self.inner = inner
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_ms / 1000.0
        self.max_concurrency = max_concurrency
        self.max_queue_rows = max_queue_rows
        self._own_executor = executor is None
        self._executor = executor or self._new_executor()
        self._executor_closed = False
        self._queue: list[_Pending] = []
        self._queued_rows = 0
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self.inline_below_s = inline_below_us / 1e6
        self.call_s: float | None = None
        """Moving average of the predict calls' duration, in seconds (None: no call yet)."""
        self.predict_calls = 0
        """Number of inner predict calls made through :meth:`submit` (for tests, stats)."""
        self.on_batch: Callable[[int], None] | None = None
        """Called with the row count of every predict call (the server's batch metric)."""
        self.on_reject: Callable[[], None] | None = None
        """Called for every request refused because the queue was full."""

    @property
    def platform(self) -> str:  # type: ignore[override]
        """The inner wrapper's platform."""
        return self.inner.platform

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="arbiter-predict")

    def load(self) -> None:
        """Load the inner wrapper (blocking); after an unload, a private executor is
        created anew."""
        self.inner.load()
        if self._executor_closed:
            self._executor = self._new_executor()
            self._executor_closed = False

    def unload(self) -> None:
        """Unload the inner wrapper and shut down a private executor."""
        self.inner.unload()
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor_closed = True

    def metadata(self) -> ModelMetadata:
        """The inner wrapper's metadata."""
        return self.inner.metadata()

    def predict(self, inputs: Arrays) -> Arrays:
        """Unbatched, blocking predict (delegates to the inner wrapper)."""
        return self.inner.predict(inputs)

    async def submit(self, inputs: Arrays) -> Arrays:
        """Predict ``inputs`` as part of a batch; await only from the event loop.

        Args:
            inputs: input name -> array; all share the first (batch) dimension.

        Returns:
            Output name -> array holding exactly this request's rows.

        Raises:
            OverloadedError: the queue holds rows and these would take it past
                ``max_queue_rows``.
            InferenceError: the model raised (for every caller of the batch) or
                returned outputs whose first dimension is not the batch size.
            ArbiterError: raised by the model, passed on.
        """
        rows = _rows(inputs)
        loop = asyncio.get_running_loop()
        idle = not self._queue and self._in_flight < self.max_concurrency
        if idle and (self.max_batch_size == 1 or rows >= self.max_batch_size
                     or (self.max_batch_wait_s == 0 and not self._inline())):
            return await self._run_alone(loop, inputs)
        self._admit(rows)
        pending = _Pending(inputs, rows, loop.create_future())
        self._queue.append(pending)
        self._queued_rows += rows
        self._schedule(loop)
        try:
            return await pending.future
        finally:
            if pending.future.cancelled() and pending in self._queue:
                self._queue.remove(pending)
                self._queued_rows -= rows

    def _inline(self) -> bool:
        """Whether the next call runs on the event loop: no call is running in a worker
        thread and the calls so far are known to be fast."""
        average = self.call_s
        return self._in_flight == 0 and average is not None and average < self.inline_below_s

    def _admit(self, rows: int) -> None:
        """Refuse ``rows`` when the queue holds rows and would go past its bound."""
        queued = self._queued_rows
        if queued and queued + rows > self.max_queue_rows:
            if self.on_reject is not None:
                self.on_reject()
            raise OverloadedError(
                f"model {self.name!r} is overloaded: {queued} rows are queued and "
                f"{rows} more would pass max_queue_rows {self.max_queue_rows}; retry later")

    def _count(self, rows: int) -> None:
        self.predict_calls += 1
        if self.on_batch is not None:
            self.on_batch(rows)

    def _call(self, inputs: Arrays) -> Arrays:
        """One timed inner predict call (in a worker thread or on the event loop)."""
        start = time.perf_counter()
        try:
            return self.inner.predict(inputs)
        finally:
            elapsed = min(time.perf_counter() - start, _CLIP * self.inline_below_s)
            average = self.call_s
            self.call_s = elapsed if average is None else (
                average + _SMOOTHING * (elapsed - average))

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, inputs: Arrays) -> Arrays:
        """The fast path: one request, one predict call, no merging or splitting."""
        self._count(_rows(inputs))
        inline = self._inline()
        self._in_flight += 1
        try:
            if inline:
                return self._call(inputs)
            return await loop.run_in_executor(self._executor, self._call, inputs)
        except ArbiterError:
            raise
        except Exception as exc:  # noqa: BLE001 - wrappers should raise InferenceError
            raise framework_error("model", exc) from exc
        finally:
            self._in_flight -= 1
            if self._queue:
                self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Decide, after a request was queued or a batch ended, whether to flush now."""
        if not self._queue or self._in_flight >= self.max_concurrency:
            return
        if self._queued_rows >= self.max_batch_size:
            self._flush(loop)
        elif self.max_batch_wait_s == 0:
            if not self._inline():
                self._flush(loop)
            elif self._soon is None:  # the requests of this loop iteration join in
                self._soon = loop.call_soon(self._on_soon, loop)
        elif self._timer is None:
            self._timer = loop.call_later(self.max_batch_wait_s, self._on_timer, loop)

    def _on_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        self._soon = None
        if self._in_flight < self.max_concurrency:
            self._flush(loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._in_flight < self.max_concurrency:
            self._flush(loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start one predict call with the oldest compatible queued requests (on the
        event loop when :meth:`_inline`, then the next, until the queue is empty)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take_batch()
        if not batch:
            return
        self._count(sum(p.rows for p in batch))
        merged = _merge(batch)
        if self._inline():
            try:
                _split(batch, self._call(merged))
            except BaseException as exc:  # noqa: BLE001 - delivered to every caller
                _fail(batch, exc)
        else:
            self._in_flight += 1
            done = loop.run_in_executor(self._executor, self._call, merged)
            done.add_done_callback(lambda f: self._complete(loop, batch, f))
        self._schedule(loop)

    def _take_batch(self) -> list[_Pending]:
        """Pop the head and the following live requests sharing its key, up to
        ``max_batch_size`` rows (a head of that many rows or more goes alone)."""
        queue = [p for p in self._queue if not p.future.done()]  # drop cancelled
        if not queue:
            self._queue, self._queued_rows = [], 0
            return []
        head = queue[0]
        batch, rest, rows = [head], [], head.rows
        for pending in queue[1:]:
            if pending.key == head.key and rows + pending.rows <= self.max_batch_size:
                batch.append(pending)
                rows += pending.rows
            else:
                rest.append(pending)
        self._queue, self._queued_rows = rest, sum(p.rows for p in rest)
        return batch

    def _complete(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], done: asyncio.Future[Any]
    ) -> None:
        self._in_flight -= 1
        try:
            _split(batch, done.result())
        except BaseException as exc:  # noqa: BLE001 - delivered to every caller
            _fail(batch, exc)
        self._schedule(loop)


def _rows(inputs: Arrays) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def _merge(batch: list[_Pending]) -> Arrays:
    if len(batch) == 1:
        return batch[0].inputs
    names = batch[0].inputs.keys()
    return {n: np.concatenate([p.inputs[n] for p in batch], axis=0) for n in names}


def _split(batch: list[_Pending], outputs: Arrays) -> None:
    total = sum(p.rows for p in batch)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InferenceError(
                f"model output {name!r} has shape {list(array.shape)}; "
                f"expected first dimension {total} (the batch)"
            )
    start = 0
    for pending in batch:
        stop = start + pending.rows
        if not pending.future.done():
            pending.future.set_result(
                outputs if len(batch) == 1 else {n: a[start:stop] for n, a in outputs.items()}
            )
        start = stop


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if pending.future.done():
            continue
        if isinstance(exc, ArbiterError):
            error: BaseException = type(exc)(exc.message)
        else:
            error = framework_error("model", exc)
        error.__cause__ = exc
        pending.future.set_exception(error)
