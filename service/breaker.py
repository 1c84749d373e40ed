"""A circuit breaker in front of the feature store.

After `failures_to_open` consecutive failed fetches the breaker opens: fetches stop waiting on Redis
and users are scored as cold starts at once (degraded), while a background probe pings the store
after a short interval that doubles on every failed probe, up to `max_open_seconds`. The first probe
that succeeds closes the breaker, so scoring is back to normal within about `max_open_seconds` (plus
one ping) of the store answering again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(self, probe: Callable[[], Awaitable[bool]], failures_to_open: int = 3,
                 first_open_seconds: float = 0.1, max_open_seconds: float = 1.0,
                 on_change: Callable[[bool], None] = lambda is_open: None):
        self.probe = probe
        self.failures_to_open = failures_to_open
        self.first_open_seconds = first_open_seconds
        self.max_open_seconds = max_open_seconds
        self.on_change = on_change
        self.consecutive_failures = 0
        self.is_open = False
        self.opened_at: float | None = None
        self._prober: asyncio.Task | None = None

    def allows(self) -> bool:
        """Whether a fetch should go to the store now."""
        return not self.is_open

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if not self.is_open and self.consecutive_failures >= self.failures_to_open:
            self._open()

    def _open(self) -> None:
        self.is_open, self.opened_at = True, time.monotonic()
        log.warning("feature store failed %d times in a row: scoring as cold start while probing it",
                    self.consecutive_failures)
        self.on_change(True)
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_closed(), name="breaker-probe")

    def _close(self) -> None:
        self.is_open, self.consecutive_failures = False, 0
        log.warning("feature store answers again after %.2f s: breaker closed",
                    time.monotonic() - (self.opened_at or time.monotonic()))
        self.on_change(False)

    async def _probe_until_closed(self) -> None:
        interval = self.first_open_seconds
        while self.is_open:
            await asyncio.sleep(interval)
            try:
                answered = await self.probe()
            except Exception:      # the probe's own timeout or any connection error: still down
                answered = False
            if answered:
                self._close()
                return
            interval = min(2 * interval, self.max_open_seconds)

    async def close(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
