"""The gateway's database thread: every decision and outcome of its calls runs here, off the event loop.

On SQLite one thread serializes them in the process: a decision never spins on the write lock an
outcome of the same gateway holds, and each call pays asyncio's executor hand-off (a queue put and
one wake-up of the loop) rather than a worker-thread task with its limiter and cancel scopes, which
cost more of the loop's CPU than the transaction itself. On Postgres a few threads overlap their
round trips. An outcome is written after the answer (`submit`); `close` waits for those still queued,
so an acknowledged call's outcome is never dropped at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio

from gatekeeper.gateway.deciding import GatekeeperError

T = TypeVar("T")
log = logging.getLogger(__name__)


class DatabaseThread:
    """One executor (one thread on SQLite) for the database calls of the gateway's hot path."""

    def __init__(self, *, threads: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gatekeeper-gateway-db")

    async def run(self, function: Callable[[], T]) -> T:
        """Run a blocking call on the database thread and return its result."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function)

    def submit(self, function: Callable[[], Any], *, what: str, done: Callable[[], None]) -> None:
        """Queue a blocking call; once it has run, its failure is logged and `done()` runs on the event loop."""

        def ran(future: asyncio.Future[Any]) -> None:
            failed = None if future.cancelled() else future.exception()
            if failed is not None:
                log_failure(what, failed)
            done()

        asyncio.get_running_loop().run_in_executor(self.executor, function).add_done_callback(ran)

    async def close(self) -> None:
        """Wait for the queued calls, then stop the thread."""
        await anyio.to_thread.run_sync(self.executor.shutdown)


def log_failure(what: str, failed: BaseException) -> None:
    """Log a call that failed after the answer: a GatekeeperError as a warning, anything else with its traceback."""
    if isinstance(failed, GatekeeperError):
        log.warning("could not %s: %s", what, failed.message)
    else:
        log.error("could not %s", what, exc_info=failed)
