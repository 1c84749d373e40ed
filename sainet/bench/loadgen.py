"""A small HTTP/1.1 load generator for `sainet bench`, run in its own process on its own core.

Two modes over keep-alive connections, with pre-built request bodies:
- closed loop: `concurrency` connections each send the next request as soon as the previous answer
  arrives; the completed rate is the server's maximum throughput at that concurrency;
- open loop: requests are *scheduled* at a fixed rate whatever the server does, and each latency is
  measured from the scheduled send time, so a slow server cannot hide its queueing from the figures
  (no coordinated omission; locust's user loop is closed, which is why it is not used here).

The HTTP client (raw asyncio streams) and the arrival schedule are `sainet.bench.http`'s.
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

from sainet.bench.http import (CLIENT_ERRORS, Connection, Pool, build_request, client_error_status,
                               fixed_rate)


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


def _score_requests(host: str, path: str, bodies: list[bytes]) -> list[bytes]:
    return [build_request("POST", host, path, body) for body in bodies]


async def run_closed(host: str, port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float,
                     warmup: float, timeout: float) -> LoadResult:
    requests = _score_requests(host, path, bodies)
    result = LoadResult("closed", seconds)
    start = time.monotonic() + warmup
    stop = start + seconds

    async def worker(index: int) -> None:
        connection: Connection | None = None
        i = index
        try:
            while (sent_at := time.monotonic()) < stop:
                try:
                    if connection is None or connection.closed:
                        connection = await Connection.open(host, port, timeout)
                    status, _ = await connection.exchange(requests[i % len(requests)], timeout)
                except CLIENT_ERRORS as error:
                    status = client_error_status(error)
                    if connection is not None:
                        connection.close()
                    connection = None
                done = time.monotonic()
                i += concurrency
                if start <= sent_at and done <= stop:     # not warm-up, and finished inside the window
                    result.record(status, done - sent_at)
        finally:
            if connection is not None:
                connection.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return result


async def run_open(host: str, port: int, path: str, bodies: list[bytes], rate: float, seconds: float,
                   warmup: float, timeout: float, max_connections: int = 512) -> LoadResult:
    """Fixed-interval arrivals at `rate`/s for warm-up + `seconds`; latency from the scheduled time."""
    requests = _score_requests(host, path, bodies)
    result = LoadResult("open", seconds, offered_rate=rate)
    pool = Pool(host, port, timeout)
    begin = time.monotonic()
    measured_from = begin + warmup

    async def one(i: int, scheduled: float) -> None:
        status, _ = await pool.send(requests[i % len(requests)])
        if scheduled >= measured_from:
            result.record(status, time.monotonic() - scheduled)

    def saturated(scheduled: float) -> None:     # the client is the bottleneck: counted as a failure
        if scheduled >= measured_from:
            result.record("client_saturated", 0.0)

    await fixed_rate(begin, rate, int((warmup + seconds) * rate), max_connections, one, saturated,
                     drain_timeout=timeout + 1)
    pool.close()
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
