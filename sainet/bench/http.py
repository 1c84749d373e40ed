"""The raw HTTP/1.1 client the load generators share (`sainet.bench.loadgen`, `loadtest.chaos.loadgen`):
keep-alive connections over asyncio streams, a pool of idle ones, and the open loop's fixed-rate
arrival schedule.

Raw streams rather than an HTTP client library: at several thousand requests/s a client's own
overhead would bound the framework floor it is meant to measure. Times are `time.monotonic()`
(CLOCK_MONOTONIC: one clock for every process on the machine, so a harness can put its own actions
on the same timeline)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# uvicorn closes keep-alive connections idle for 5 s; a pooled connection idle for longer than this
# is dropped rather than reused (a request written to a closing socket is not the server's failure).
MAX_IDLE_SECONDS = 3.0
# what a request can fail with on the client's side: refused, reset, timed out, a garbled answer
CLIENT_ERRORS = (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError)


def build_request(method: str, host: str, path: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def client_error_status(error: BaseException) -> str:
    """The status recorded for a request that failed on the client's side."""
    return f"client:{type(error).__name__}"


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.last_used = time.monotonic()
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> "Connection":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer)

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        """Sends one request, reads the whole answer: (status, body). A `Connection: close` answer
        marks the connection closed, so that it is not reused."""
        self.writer.write(request)
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    self.closed = True
            body = await self.reader.readexactly(length) if length else b""
        self.last_used = time.monotonic()
        return status, body

    def close(self) -> None:
        self.closed = True
        try:
            self.writer.close()
        except Exception:
            pass


class Pool:
    """Idle keep-alive connections for an open loop (one request per connection at a time)."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.idle: list[Connection] = []
        self.opened = 0

    async def get(self) -> Connection:
        while self.idle:
            connection = self.idle.pop()
            if time.monotonic() - connection.last_used <= MAX_IDLE_SECONDS and not connection.closed:
                return connection
            connection.close()
        self.opened += 1
        return await Connection.open(self.host, self.port, self.timeout)

    def put(self, connection: Connection) -> None:
        if connection.closed:
            connection.close()
        else:
            self.idle.append(connection)

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()

    async def send(self, request: bytes) -> tuple[int | str, bytes]:
        """One request on a pooled connection: (HTTP status, body), or (`client:<error>`, b"")."""
        connection = None
        try:
            connection = await self.get()
            status, body = await connection.exchange(request, self.timeout)
        except CLIENT_ERRORS as error:
            if connection is not None:
                connection.close()
            return client_error_status(error), b""
        self.put(connection)
        return status, body


async def fixed_rate(begin: float, rate: float, total: int, max_in_flight: int,
                     launch: Callable[[int, float], Awaitable[None]],
                     saturated: Callable[[float], None], drain_timeout: float) -> None:
    """The open loop's arrivals: request i is *scheduled* at begin + i / rate whatever the server
    does (no coordinated omission) and started as `launch(i, scheduled)`; one that would exceed
    `max_in_flight` requests in flight is not sent but reported to `saturated(scheduled)`: there the
    client is the bottleneck. Returns when every started request finished or `drain_timeout` passed."""
    pending: set[asyncio.Task] = set()
    interval = 1.0 / rate
    for i in range(total):
        scheduled = begin + i * interval
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) >= max_in_flight:
            saturated(scheduled)
            continue
        task = asyncio.create_task(launch(i, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=drain_timeout)
