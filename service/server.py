"""The HTTP server around the app: uvicorn with the limits a shared network needs.

uvicorn bounds neither the size of a request's headers nor the time a client may take to send them,
and keeps any number of connections open. `GuardedHttpProtocol` (uvicorn's httptools protocol) adds:
- a header limit: more than `max_header_bytes` before the end of the headers gets 431 and a close;
- a header deadline: a connection that has not finished a request's headers `header_timeout_seconds`
  after it opened (or after its previous answer) gets 408 and a close;
- a connection cap: past `max_connections` open connections a new one gets 503 and a close.
The body's deadline and size are the app's own middleware (`service.app.RequestGuard`), and the
graceful drain after SIGTERM is bounded by `shutdown_grace_seconds`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import sys
import time

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.admission import ADMITTED, ARRIVED
from service.settings import Settings

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_SECONDS = 0.0005


def _plain_answer(status: int, reason: str) -> bytes:
    body = f"{status} {reason}\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


HEADERS_TOO_LARGE = _plain_answer(431, "Request Header Fields Too Large")
HEADERS_TOO_SLOW = _plain_answer(408, "Request Timeout")
TOO_MANY_CONNECTIONS = _plain_answer(503, "Service Unavailable")


class GuardedHttpProtocol(HttpToolsProtocol):
    """One connection. The limits come from `config.sainet_settings` (see `server_config`)."""

    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings: Settings = config.sainet_settings
        self.max_header_bytes = settings.max_header_bytes
        self.header_timeout = settings.header_timeout_seconds
        self.max_connections = settings.max_connections
        self.on_refused = getattr(config, "sainet_on_refused", None)     # status -> None
        self.door = getattr(config, "sainet_door", None)                 # service.admission.Door
        self.admitted = False          # the current request passed the door here
        self.dropping_body = False     # the current request was refused at the door: drop its body
        self.header_bytes = 0
        self.reading_headers = True
        self.headers_completed = 0          # header sections finished on this connection
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(TOO_MANY_CONNECTIONS, "connection cap reached")
            return
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.reading_headers:
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes:
                headers_seen = self.headers_completed
                super().data_received(data)     # the headers may end inside this chunk, a body after them
                if self.headers_completed == headers_seen:   # they did not: all of it was header
                    self._refuse(HEADERS_TOO_LARGE, "request headers over the limit")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading_headers = True
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self.reading_headers, self.header_bytes = False, 0
        self.headers_completed += 1
        self._cancel_header_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:    # headers that arrived in one read with their body
            self._refuse(HEADERS_TOO_LARGE, "request headers over the limit")
            return
        arrived = time.perf_counter()
        if self._refused_at_the_door(arrived):
            return
        super().on_headers_complete()
        self.scope["state"][ARRIVED] = arrived
        self.scope["state"][ADMITTED] = self.admitted

    def _refused_at_the_door(self, arrived: float) -> bool:
        """POST /score meets the service's door (`service.admission.Door`) here, before any ASGI code:
        a refusal is written straight to the socket and the body that follows is dropped unread, the
        connection kept alive (closed if the body has not arrived within the header timeout). Only
        when no earlier answer is pending on the connection (never out of order with pipelined
        requests); those pass through the app's own gate."""
        self.admitted = False
        if self.door is None or (self.cycle is not None and not self.cycle.response_complete):
            return False
        if self.parser.get_method() != b"POST" or httptools.parse_url(self.url).path != b"/score":
            return False
        answer = self.door.raw_refusal(self.headers)
        if answer is None:
            self.admitted = True
            return False
        self.dropping_body = True
        self.transport.write(answer)
        self.door.observe_refusal(arrived)
        self.loop.call_later(self.header_timeout, self._close_if_still_dropping, self.headers_completed)
        if not self.parser.should_keep_alive():
            self.transport.close()
        elif self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)
        return True

    def _arm_header_timer(self) -> None:
        if self.header_timer is None and not self.transport.is_closing():
            self.header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.reading_headers and (self.cycle is None or self.cycle.response_complete):
            self._refuse(HEADERS_TOO_SLOW, "request headers not received in time")

    def _close_if_still_dropping(self, request: int) -> None:
        if self.dropping_body and self.headers_completed == request and not self.transport.is_closing():
            self.transport.close()      # a refused request's body that trickles on holds nothing

    def on_body(self, body: bytes) -> None:
        # nothing to read for a request refused at its headers
        if not self.transport.is_closing() and not self.dropping_body:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.transport.is_closing() and not self.dropping_body:
            super().on_message_complete()
        self.reading_headers, self.header_bytes, self.dropping_body = True, 0, False

    def _refuse(self, answer: bytes, why: str) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            log.debug("refusing %s: %s", self.client, why)
            if self.on_refused is not None:
                self.on_refused(answer[9:12].decode())      # "HTTP/1.1 431 ..."
            self.transport.write(answer)
            self.transport.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False     # a host name: it may resolve to anything


def warn_if_exposed(host: str, settings: Settings) -> None:
    """A loud start-up warning when the port is reachable from other machines and a write or admin
    endpoint is open to anyone who reaches it."""
    open_routes = [route for route, token in (("POST /events (SAINET_WRITE_TOKEN)", settings.write_token),
                                              ("POST /v2/models/reload (SAINET_ADMIN_TOKEN)", settings.admin_token))
                   if token is None]
    if open_routes and not is_loopback(host):
        log.warning("!" * 78)
        log.warning("sainet serve listens on %s without tokens: anyone who reaches the port can call %s. "
                    "Set the tokens, or bind to 127.0.0.1.", host, " and ".join(open_routes))
        log.warning("!" * 78)


def server_config(app, settings: Settings, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's configuration for the service: the guarded protocol and every limit from `settings`."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=settings.access_log, lifespan="on",
        http=GuardedHttpProtocol, limit_concurrency=settings.max_connections,
        timeout_keep_alive=max(1, math.ceil(settings.keep_alive_seconds)),
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_seconds)))
    config.sainet_settings = settings
    # The event loop and the inference thread share the GIL: at the default 5 ms switch interval the
    # loop waits up to 5 ms behind the worker's Python (encoding) at every hand-off, and under load
    # requests then queue before the door can see them.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    core = getattr(getattr(app, "state", None), "core", None)
    if core is not None:
        config.sainet_on_refused = lambda status: core.metrics.refused_before_handler.labels(status=status).inc()
        config.sainet_door = core.door
    return config
