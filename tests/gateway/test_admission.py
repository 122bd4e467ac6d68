"""Backpressure of a deployment: at most max_in_flight at once, max_queue waiting in
order, the rest refused at once (429; 503 while draining), a waiter that times out or
leaves gives its place up, and every refusal is counted by reason."""

from __future__ import annotations

import asyncio

import pytest

from gateway.admission import Admission
from protos.errors import ModelNotReadyError, OverloadedError


def _admission(**kwargs) -> tuple[Admission, list[str]]:
    shed: list[str] = []
    settings = {"max_in_flight": 2, "max_queue": 2, "queue_timeout_s": 5.0, **kwargs}
    return Admission("credit", on_shed=shed.append, **settings), shed


async def test_bound_queue_and_refusal_at_once() -> None:
    admission, shed = _admission()
    await admission.acquire()
    await admission.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await admission.acquire()
        order.append(i)

    waiters = [asyncio.create_task(wait(i)) for i in range(2)]
    await asyncio.sleep(0)
    assert (admission.in_flight, admission.queued) == (2, 2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(OverloadedError, match="2 requests in flight .* 2 waiting"):
        await admission.acquire()
    assert loop.time() - start < 0.01 and shed == ["queue_full"]
    admission.release()
    admission.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1] and (admission.in_flight, admission.queued) == (2, 0)
    admission.release()
    admission.release()
    assert admission.in_flight == 0


async def test_queue_timeout_is_429_and_frees_the_place() -> None:
    admission, shed = _admission(max_in_flight=1, max_queue=4, queue_timeout_s=0.05)
    await admission.acquire()
    with pytest.raises(OverloadedError, match="within 50 ms"):
        await admission.acquire()
    assert shed == ["queue_timeout"] and admission.queued == 0
    admission.release()
    await admission.acquire()  # the place is free again
    assert admission.in_flight == 1


async def test_a_waiter_that_leaves_gives_its_place_up() -> None:
    admission, _ = _admission(max_in_flight=1, max_queue=4)
    await admission.acquire()
    leaving = asyncio.create_task(admission.acquire())
    staying = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    admission.release()
    await asyncio.wait_for(staying, 1)
    assert (admission.in_flight, admission.queued) == (1, 0)


async def test_draining_refuses_with_503_when_full() -> None:
    draining = {"on": False}
    admission, shed = _admission(max_in_flight=1, max_queue=4,
                                 draining=lambda: draining["on"])
    await admission.acquire()
    draining["on"] = True
    with pytest.raises(ModelNotReadyError, match="draining") as caught:
        await admission.acquire()
    assert caught.value.status == 503 and caught.value.retry_after_s == 1
    assert shed == ["draining"]
