"""A version number bumped from any thread and awaited from asyncio: how the reconcile loop (a thread)
tells long-polling requests (coroutines on the API's event loop) that a round committed new decisions."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Changes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.version = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def bump(self) -> None:
        """Something changed: wake every waiter, on whichever event loop it waits."""
        with self._lock:
            self.version += 1
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that event loop has closed: nobody waits there
                loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, seen: int, timeout: float) -> None:
        """Until the version is past ``seen`` (at once if it already is), or ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.version != seen:
                return
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            with self._lock, contextlib.suppress(ValueError):  # a bump may have taken it already
                self._waiters.remove((loop, future))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
