"""A small HTTP/1.1 load generator for `sainet bench`, run in its own process on its own core.

Two modes over keep-alive connections, with pre-built request bodies:
- closed loop: `concurrency` connections each send the next request as soon as the previous answer
  arrives; the completed rate is the server's maximum throughput at that concurrency;
- open loop: requests are *scheduled* at a fixed rate whatever the server does, and each latency is
  measured from the scheduled send time, so a slow server cannot hide its queueing from the figures
  (no coordinated omission; locust's user loop is closed, which is why it is not used here).

Raw asyncio streams rather than an HTTP client library: at several thousand requests/s a client's own
overhead would bound the framework floor it is meant to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class LoadResult:
    mode: str
    seconds: float
    sent: int = 0
    ok: int = 0
    failed: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)    # of successful requests
    offered_rate: float | None = None

    def record(self, status: int | str, latency_seconds: float) -> None:
        """One finished request: its status (an HTTP code, or `client:<error>`) and latency."""
        self.sent += 1
        self.status_counts[str(status)] = self.status_counts.get(str(status), 0) + 1
        if status == 200:
            self.ok += 1
            self.latencies_ms.append(latency_seconds * 1e3)
        else:
            self.failed += 1

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"mode": self.mode, "seconds": self.seconds, "offered_rate": self.offered_rate,
                "sent": self.sent, "ok": self.ok, "failed": self.failed, "status_counts": self.status_counts,
                "achieved_rate": self.rate,
                "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
                "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}


def build_request(host: str, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


# uvicorn closes keep-alive connections idle for 5 s; a pooled connection idle for longer than this
# is dropped rather than reused (a request written to a closing socket is not the server's failure).
MAX_IDLE_SECONDS = 3.0


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.last_used = time.perf_counter()

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> "Connection":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer)

    async def exchange(self, request: bytes, timeout: float) -> int:
        """Sends one request and reads the whole answer; returns the HTTP status."""
        self.writer.write(request)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return status

    def close(self) -> None:
        self.writer.close()


async def run_closed(host: str, port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float,
                     warmup: float, timeout: float) -> LoadResult:
    requests = [build_request(host, path, b) for b in bodies]
    result = LoadResult("closed", seconds)
    start = time.perf_counter() + warmup
    stop = start + seconds

    async def worker(index: int) -> None:
        connection = await Connection.open(host, port, timeout)
        i = index
        try:
            while (now := time.perf_counter()) < stop:
                sent_at = now
                try:
                    status = await connection.exchange(requests[i % len(requests)], timeout)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                    status = f"client:{type(error).__name__}"
                    connection.close()
                    connection = await Connection.open(host, port, timeout)
                done = time.perf_counter()
                i += concurrency
                if start <= sent_at and done <= stop:     # not warm-up, and finished inside the window
                    result.record(status, done - sent_at)
        finally:
            connection.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return result


async def run_open(host: str, port: int, path: str, bodies: list[bytes], rate: float, seconds: float,
                   warmup: float, timeout: float, max_connections: int = 512) -> LoadResult:
    """Fixed-interval arrivals at `rate`/s for warm-up + `seconds`; latency from the scheduled time."""
    requests = [build_request(host, path, b) for b in bodies]
    result = LoadResult("open", seconds, offered_rate=rate)
    idle: list[Connection] = []
    opened = 0
    interval = 1.0 / rate
    begin = time.perf_counter()
    measured_from = begin + warmup
    total = int((warmup + seconds) * rate)
    pending: set[asyncio.Task] = set()

    async def one(i: int, scheduled: float) -> None:
        nonlocal opened
        connection = idle.pop() if idle else None
        while connection is not None and time.perf_counter() - connection.last_used > MAX_IDLE_SECONDS:
            connection.close()
            connection = idle.pop() if idle else None
        try:
            if connection is None:
                opened += 1
                connection = await Connection.open(host, port, timeout)
            status = await connection.exchange(requests[i % len(requests)], timeout)
            connection.last_used = time.perf_counter()
            idle.append(connection)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
            status = f"client:{type(error).__name__}"
            if connection is not None:
                connection.close()
        if scheduled >= measured_from:
            result.record(status, time.perf_counter() - scheduled)

    for i in range(total):
        scheduled = begin + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) >= max_connections:   # the client is the bottleneck: count it as a failure
            if scheduled >= measured_from:
                result.record("client_saturated", 0.0)
            continue
        task = asyncio.create_task(one(i, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=timeout + 1)
    for connection in idle:
        connection.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="http://host:port/path")
    parser.add_argument("--bodies", required=True, help="JSON file: a list of request bodies (objects)")
    parser.add_argument("--mode", choices=["closed", "open"], required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    from urllib.parse import urlsplit

    url = urlsplit(args.url)
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in json.loads(Path(args.bodies).read_text())]
    if args.mode == "closed":
        result = asyncio.run(run_closed(url.hostname, url.port, url.path, bodies, args.concurrency, args.seconds,
                                        args.warmup, args.timeout))
    else:
        if not args.rate:
            parser.error("--rate is required in open-loop mode")
        result = asyncio.run(run_open(url.hostname, url.port, url.path, bodies, args.rate, args.seconds,
                                      args.warmup, args.timeout))
    Path(args.out).write_text(json.dumps({"summary": result.summary(), "latencies_ms": result.latencies_ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
