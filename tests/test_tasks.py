"""FirstErrorGroup: a task group's failure leaves as its first real error, alone."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from exporter.errors import RetriesExhausted, SinkError
from exporter.tasks import FirstErrorGroup


async def test_a_consumer_failure_beats_the_broken_stream_it_causes() -> None:
    """The producer's BrokenResourceError is a consequence: the consumer's error is raised."""
    send, receive = anyio.create_memory_object_stream[int](0)

    async def consume() -> None:
        async with receive:
            async for item in receive:
                raise SinkError("parquet", f"disk full at item {item}")

    with pytest.raises(SinkError, match="disk full at item 0"):
        async with FirstErrorGroup() as tasks:
            tasks.start_soon(consume)
            async with send:
                for item in range(10):
                    await send.send(item)  # BrokenResourceError once the consumer has failed


async def test_the_bodys_failure_cancels_the_tasks_and_leaves_as_itself() -> None:
    cancelled = anyio.Event()

    async def forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    with pytest.raises(KeyError):
        async with FirstErrorGroup() as tasks:
            tasks.start_soon(forever)
            await anyio.lowlevel.checkpoint()
            raise KeyError("body")
    assert cancelled.is_set()


async def test_the_first_recorded_failure_wins_and_keeps_its_cause() -> None:
    """Later failures (here the body's) are dropped; the error's own chain is untouched."""
    cause = TimeoutError("read timeout")
    first = RetriesExhausted("https://api.example.test/x", 8, "timeout")
    first.__cause__ = cause
    with pytest.raises(RetriesExhausted) as info:
        async with FirstErrorGroup() as tasks:
            tasks.fail(first)
            tasks.fail(ValueError("second"))
            raise RuntimeError("third")
    assert info.value is first and info.value.__cause__ is cause


async def test_cancellation_and_success_pass_through() -> None:
    """An outer cancellation is no error; a group whose tasks succeed raises nothing."""
    with anyio.move_on_after(0) as outer:
        async with FirstErrorGroup() as tasks:
            tasks.start_soon(anyio.sleep_forever)
    assert outer.cancelled_caught
    done: list[int] = []

    async def work(n: int) -> None:
        done.append(n)

    async with FirstErrorGroup() as tasks:
        tasks.start_soon(work, 1)
        tasks.start_soon(work, 2)
    assert sorted(done) == [1, 2]
