"""Small helpers for the background tasks the gateway's parts own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a task the caller owns and wait until it has finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def until_one_ends(*coroutines: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines as tasks until one ends (its error is raised, or ConnectionError if it
    just returned); the others are cancelled and awaited."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise ConnectionError("a task ended")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
