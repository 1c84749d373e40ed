"""Admission control for POST /score: the door a request meets before its body is read or parsed.

The HTTP server (`service.server`) asks `Door.raw_refusal` as soon as a request's headers are in and
writes a refusal to the socket itself; `AdmissionGate` (ASGI middleware) is the door for whatever
reaches the app otherwise, answers a bad deadline header, and hands the route the request's
deadline in `scope["state"]`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from service.batcher import DynamicBatcher
from service.errors import InvalidInput, Overloaded
from service.http_errors import raw_http_answer, send_error
from service.metrics import ServiceMetrics
from service.settings import Settings

DEADLINE_HEADER = b"x-request-timeout-ms"
# keys of a request's scope["state"]: when its headers were in and whether the HTTP server admitted
# it (`service.server`), and its deadline (for the route)
ARRIVED, ADMITTED, DEADLINE = "sainet_arrived", "sainet_admitted", "sainet_deadline"


def request_budget(headers: list[tuple[bytes, bytes]], default_seconds: float) -> float:
    """Seconds a /score request has to be answered: the client's `X-Request-Timeout-Ms`, capped by
    SAINET_REQUEST_TIMEOUT_MS (which it defaults to)."""
    raw = next((v for k, v in headers if k == DEADLINE_HEADER), None)
    if raw is None:
        return default_seconds
    try:
        milliseconds = float(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        milliseconds = float("nan")
    if not 0 < milliseconds < float("inf"):     # NaN fails both
        raise InvalidInput("X-Request-Timeout-Ms must be a positive number of milliseconds",
                           "header.X-Request-Timeout-Ms")
    return min(milliseconds / 1000, default_seconds)


QUEUE_FULL = "the scoring queue is full; retry shortly"
CANNOT_MEET_DEADLINE = "the service cannot answer this request within its deadline now; retry shortly"


class Door:
    """Admission of POST /score, before the body is read or parsed: refuses (429) when
    `SAINET_QUEUE_SIZE` requests are admitted already or the recent service rate cannot answer this
    one by its deadline (`DynamicBatcher.admission_refusal`). The HTTP server asks it as soon as a
    request's headers are in and writes a refusal itself (`raw_refusal`), so an overloaded replica
    spends microseconds per refusal and keeps its goodput; `AdmissionGate` asks it for what reaches
    the app any other way."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, batcher: Callable[[], DynamicBatcher | None]):
        self.settings, self.metrics, self.batcher = settings, metrics, batcher
        self.loop_lag = 0.0      # recent lateness of the event loop, seconds (see `watch_loop_lag`)
        self.raw_answers = {reason: raw_http_answer(Overloaded(message), "Too Many Requests")
                            for reason, message in (("queue_full", QUEUE_FULL),
                                                    ("deadline_estimate", CANNOT_MEET_DEADLINE))}

    def budget(self, headers: list[tuple[bytes, bytes]]) -> float:
        return request_budget(headers, self.settings.request_timeout_ms / 1000)

    async def watch_loop_lag(self, interval_seconds: float = 0.02, weight: float = 0.2) -> None:
        """Keeps `loop_lag` (and its gauge): how late a timer of the event loop fires. A request
        has waited about that long in the socket before the door sees it, so the door takes it off
        the request's budget."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(interval_seconds)
            lag = max(0.0, time.perf_counter() - before - interval_seconds)
            self.loop_lag += weight * (lag - self.loop_lag)
            self.metrics.loop_lag.set(self.loop_lag)

    def refusal(self, budget_seconds: float) -> str | None:
        """The reason this request is refused (counted), or None when it is admitted."""
        batcher = self.batcher()
        if batcher is None:
            return None
        reason = batcher.admission_refusal(budget_seconds - self.loop_lag)
        if reason is not None:
            self.metrics.rejected.labels(reason=reason).inc()
        return reason

    def raw_refusal(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """For the HTTP server: the bytes to answer with now, or None to let the request in (a bad
        deadline header too: the app answers it with its 422)."""
        try:
            reason = self.refusal(self.budget(headers))
        except InvalidInput:
            return None
        return None if reason is None else self.raw_answers[reason]

    def observe_refusal(self, arrived: float) -> None:
        self.metrics.rejection_latency.observe(time.perf_counter() - arrived)


class AdmissionGate:
    """ASGI middleware, outermost on POST /score: the door for requests the HTTP server did not
    already admit (pipelined ones, other servers), the 422 for a bad `X-Request-Timeout-Ms`, and
    the request's deadline, handed to the route in `scope["state"]`."""

    def __init__(self, app, door: Door):
        self.app, self.door = app, door

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/score" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        arrived = state.get(ARRIVED, time.perf_counter())
        door = self.door
        try:
            budget = door.budget(scope["headers"])
        except InvalidInput as error:
            door.metrics.refused_before_handler.labels(status="422").inc()
            return await send_error(send, error)
        if not state.get(ADMITTED):
            reason = door.refusal(budget)
            if reason is not None:
                await send_error(send, Overloaded(QUEUE_FULL if reason == "queue_full" else CANNOT_MEET_DEADLINE))
                door.observe_refusal(arrived)
                return
        state[DEADLINE] = arrived + budget
        await self.app(scope, receive, send)
