"""Backpressure: a bound on a deployment's requests in flight, with a bounded wait queue.

At most ``max_in_flight`` requests of a deployment are answered at once; up to
``max_queue`` more wait, first come first served, at most ``queue_timeout_ms``. Past
that a request is refused at once: 429 (:class:`OverloadedError`, ``Retry-After``), or
503 (:class:`ModelNotReadyError`) while the server drains. What is admitted is never
more than the bound, so latency and memory stay bounded however many clients come:
the admitted requests keep their latency and the rest learn at once to come back later.

A finished request hands its place straight to the longest waiter, so the order is
fair and no wake-up is lost. Waiting is the only await; admission itself is
synchronous.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from protos.errors import ModelNotReadyError, OverloadedError

__all__ = ["Admission"]


class Admission:
    """The in-flight bound and wait queue of one deployment.

    Args:
        name: deployment name (for messages).
        max_in_flight: requests answered at once (>= 1).
        max_queue: requests waiting at most (>= 0).
        queue_timeout_s: longest wait in the queue, seconds (> 0).
        draining: returns whether the server is draining.
        on_shed: called with the reason (``queue_full``, ``queue_timeout``,
            ``draining``) of each refusal.
    """

    def __init__(
        self, name: str, max_in_flight: int, max_queue: int, queue_timeout_s: float, *,
        draining: Callable[[], bool] = lambda: False,
        on_shed: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.name = name
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.draining = draining
        self.on_shed = on_shed
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        """Requests waiting for a place."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a place in flight, waiting in the queue if needed; pair with
        :meth:`release`.

        Raises:
            OverloadedError: the queue is full, or the wait passed ``queue_timeout_s``.
            ModelNotReadyError: no place free while the server drains.
        """
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return
        if self.draining():
            raise self._shed("draining", ModelNotReadyError(
                f"deployment {self.name!r} is draining"))
        if len(self._waiters) >= self.max_queue:
            raise self._shed("queue_full", OverloadedError(
                f"deployment {self.name!r} is overloaded: {self.in_flight} requests in "
                f"flight (max_in_flight) and {len(self._waiters)} waiting (max_queue)"))
        await self._wait()

    async def _wait(self) -> None:
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(place)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await asyncio.shield(place)
        except TimeoutError:
            if place.done():  # handed a place as the timeout fired: keep it
                return
            self._waiters.remove(place)
            reason = "draining" if self.draining() else "queue_timeout"
            error = ModelNotReadyError if reason == "draining" else OverloadedError
            raise self._shed(reason, error(
                f"deployment {self.name!r} is overloaded: no place in flight within "
                f"{self.queue_timeout_s * 1000:.0f} ms (queue_timeout_ms)")) from None
        except asyncio.CancelledError:  # the client left while waiting
            if place.done():
                self.release()
            else:
                self._waiters.remove(place)
            raise

    def release(self) -> None:
        """Give a place back: to the longest waiter, else free it."""
        while self._waiters:
            place = self._waiters.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.in_flight -= 1

    def _shed(self, reason: str, error: Exception) -> Exception:
        self.on_shed(reason)
        return error
