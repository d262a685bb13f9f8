"""A task group whose failure leaves as the first real error, never as an ExceptionGroup.

anyio raises whatever a group's tasks raised wrapped in an ExceptionGroup, and by the time the
group exits, the first failure has often caused others: the producer of a closed stream gets
BrokenResourceError, a consumer an EndOfStream. The CLI maps one error to one exit code and
one line, so it needs the cause, alone. `FirstErrorGroup` records a failure the moment it is
raised (a task's, the body's, or one handed to `fail`), cancels the group, and raises that
error by itself once every task has stopped. Cancellation and other BaseExceptions pass
through anyio as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVarTuple, Unpack

import anyio
import anyio.abc

_Args = TypeVarTuple("_Args")


class FirstErrorGroup:
    """`async with FirstErrorGroup() as tasks:`, like an anyio task group, failing as itself."""

    def __init__(self) -> None:
        self._group = anyio.create_task_group()
        self.error: Exception | None = None

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        """The group's scope: cancelling it stops every task and the body."""
        return self._group.cancel_scope

    def start_soon(self, func: Callable[[Unpack[_Args]], Awaitable[Any]], *args: *_Args) -> None:
        """Start `func(*args)` in the group; its exception, if first, becomes the group's."""
        self._group.start_soon(self._run, func, args)

    def fail(self, error: Exception) -> None:
        """Record `error` unless an earlier failure was recorded, and cancel the group."""
        if self.error is None:
            self.error = error
        self._group.cancel_scope.cancel()

    async def _run(self, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await func(*args)
        except Exception as exc:  # recorded before any other task can see its consequences
            self.fail(exc)

    async def __aenter__(self) -> Self:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if isinstance(exc, Exception):
            self.fail(exc)  # the body's own failure: the group then only stops its tasks
            exc_type, exc, tb = None, None, None
        suppress = await self._group.__aexit__(exc_type, exc, tb)
        if self.error is not None:
            raise self.error
        return suppress
