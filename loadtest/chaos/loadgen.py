"""The chaos harness's load generator: one asyncio process (pinned to the load generator's CPU)
running, together, what a phase needs, and recording every request:

- `score`: /score in a closed loop (`connections` keep-alive connections, each sending as soon as
  its answer is in) or an open loop (arrivals at a fixed `rate`, whatever the server does; latency
  from the *scheduled* time, so queueing cannot hide, as in `sainet.bench.loadgen`). Each answer's
  status and its `"degraded"` flag are kept, with scheduled/sent and finished times;
- `ready_poll`: GET /v2/health/ready every `interval` seconds;
- `events_flood`: `senders` closed loops posting /events as fast as they are answered;
- `events_ordered`: a plan of /events requests, each sender owning its users and sending their
  events in order, one request at a time; a request that gets 429/503 or a client error (timeout,
  reset) is sent again, same body and same `event_id`s, until it is answered 200; a share of the
  answered ones is sent once more on purpose (a duplicate delivery).

The HTTP client and the open loop's arrivals are `sainet.bench.http`'s; its times are `time.monotonic()`,
so the harness can put its own actions (a delay set, Redis killed) on the same timeline.

`python -m loadtest.chaos.loadgen --plan plan.json --out result.json`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

from sainet.bench.http import (CLIENT_ERRORS, Connection, Pool, build_request, client_error_status,
                               fixed_rate)

def degraded_flag(status: int | str, body: bytes) -> int:
    """1/0 for a 200 /score answer's "degraded", -1 otherwise."""
    if status != 200:
        return -1
    return 1 if b'"degraded":true' in body else 0


class Recorder:
    def __init__(self):
        self.t_sched: list[float] = []
        self.t_done: list[float] = []
        self.status: list[str] = []
        self.degraded: list[int] = []

    def add(self, scheduled: float, status, degraded: int, done: float | None = None) -> None:
        self.t_sched.append(round(scheduled, 6))
        self.t_done.append(round(time.monotonic() if done is None else done, 6))
        self.status.append(str(status))
        self.degraded.append(degraded)

    def dump(self) -> dict:
        return {"t_sched": self.t_sched, "t_done": self.t_done, "status": self.status, "degraded": self.degraded}


async def closed_loop(host: str, port: int, requests: list[bytes], connections: int, stop: asyncio.Event,
                      timeout: float, recorder: Recorder, offset: int = 0, is_score: bool = True,
                      pause: float = 0.0) -> None:
    async def worker(index: int) -> None:
        connection: Connection | None = None
        i = index + offset
        while not stop.is_set():
            sent = time.monotonic()
            try:
                if connection is None or connection.closed:
                    if connection is not None:
                        connection.close()
                    connection = await Connection.open(host, port, timeout)
                status, body = await connection.exchange(requests[i % len(requests)], timeout)
                flag = degraded_flag(status, body) if is_score else -1
            except CLIENT_ERRORS as error:
                status, flag = client_error_status(error), -1
                if connection is not None:
                    connection.close()
                connection = None
                await asyncio.sleep(0.01)      # a refused or reset connection must not spin the loop
            recorder.add(sent, status, flag)
            i += connections
            if pause:
                await asyncio.sleep(pause)
        if connection is not None:
            connection.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))


async def open_loop(host: str, port: int, requests: list[bytes], rate: float, begin: float, end: float,
                    timeout: float, max_in_flight: int, recorder: Recorder) -> dict:
    pool = Pool(host, port, timeout)
    lags: list[float] = []
    saturated: list[float] = []

    async def one(i: int, scheduled: float) -> None:
        lags.append(time.monotonic() - scheduled)     # the client's own lag: its CPU, not the server
        status, body = await pool.send(requests[i % len(requests)])
        recorder.add(scheduled, status, degraded_flag(status, body))

    def not_sent(scheduled: float) -> None:           # the client is the bottleneck: recorded as such
        saturated.append(scheduled)
        recorder.add(scheduled, "client_saturated", -1, done=scheduled)

    await fixed_rate(begin, rate, int((end - begin) * rate), max_in_flight, one, not_sent,
                     drain_timeout=timeout + 1)
    pool.close()
    return {"connections_opened": pool.opened, "client_saturated": len(saturated),
            "client_send_lag_ms": _percentiles(lags)}


async def ready_poll(host: str, port: int, interval: float, timeout: float, stop: asyncio.Event) -> dict:
    request = build_request("GET", host, "/v2/health/ready")
    t, status, degraded = [], [], []
    connection: Connection | None = None
    while not stop.is_set():
        started = time.monotonic()
        try:
            if connection is None or connection.closed:
                connection = await Connection.open(host, port, timeout)
            code, body = await connection.exchange(request, timeout)
            flag = 1 if b'"degraded":true' in body else 0
        except CLIENT_ERRORS as error:
            code, flag = client_error_status(error), -1
            if connection is not None:
                connection.close()
            connection = None
        t.append(round(started, 6))
        status.append(str(code))
        degraded.append(flag)
        await asyncio.sleep(max(0.0, started + interval - time.monotonic()))
    if connection is not None:
        connection.close()
    return {"t": t, "status": status, "degraded": degraded}


def events_body(events: list[dict], body_format: str) -> bytes:
    payload = {"events": events} if body_format == "object" else events
    return json.dumps(payload, separators=(",", ":")).encode()


async def events_ordered(host: str, port: int, spec: dict, plan: list[list[list[dict]]]) -> dict:
    """`plan[sender]` is that sender's requests in order, each a list of events."""
    rng = random.Random(spec.get("seed", 0))
    timeout, max_attempts = spec.get("timeout", 2.0), spec.get("max_attempts", 40)
    duplicate_share, body_format = spec.get("duplicate_share", 0.05), spec.get("body_format", "list")
    outcomes: list[list[dict]] = [[] for _ in plan]
    counts: dict[str, int] = {}
    latencies: list[float] = []
    totals = {"requests": 0, "sends": 0, "retries": 0, "deliberate_duplicates": 0, "given_up": 0,
              "rejected_permanently": 0}

    async def send(connection_box: list, request: bytes) -> str:
        started = time.monotonic()
        try:
            if connection_box[0] is None or connection_box[0].closed:
                connection_box[0] = await Connection.open(host, port, timeout)
            status, _ = await connection_box[0].exchange(request, timeout)
        except CLIENT_ERRORS as error:
            status = client_error_status(error)
            if connection_box[0] is not None:
                connection_box[0].close()
            connection_box[0] = None
        latencies.append(time.monotonic() - started)
        counts[str(status)] = counts.get(str(status), 0) + 1
        totals["sends"] += 1
        return str(status)

    async def sender(index: int) -> None:
        box: list = [None]
        for events in plan[index]:
            request = build_request("POST", host, "/events", events_body(events, body_format))
            totals["requests"] += 1
            attempts, confirmed, status = 0, False, ""
            while attempts < max_attempts:
                attempts += 1
                status = await send(box, request)
                if status == "200":
                    confirmed = True
                    break
                if not (status in ("429", "503", "408") or status.startswith("client:")):
                    totals["rejected_permanently"] += 1
                    break
                totals["retries"] += 1
                await asyncio.sleep(0.02 * min(attempts, 10))
            else:
                totals["given_up"] += 1
            duplicate = confirmed and rng.random() < duplicate_share
            if duplicate:
                totals["deliberate_duplicates"] += 1
                await send(box, request)       # whatever its answer: the events were confirmed already
            outcomes[index].append({"confirmed": confirmed, "attempts": attempts, "last_status": status,
                                    "duplicate_sent": duplicate})
        if box[0] is not None:
            box[0].close()

    started = time.monotonic()
    await asyncio.gather(*(sender(i) for i in range(len(plan))))
    return {"outcomes": outcomes, "status_counts": counts, "seconds": time.monotonic() - started,
            "latency_ms": _percentiles(latencies), **totals}


def _percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    return {"p50": at(0.5), "p99": at(0.99), "max": ordered[-1] * 1e3}


async def run(plan: dict) -> dict:
    host, port = plan.get("host", "127.0.0.1"), plan["port"]
    warmup, seconds = plan.get("warmup", 1.0), plan.get("seconds", 10.0)
    headers = plan.get("headers", {})
    begin = max(time.monotonic(), plan.get("start_at") or 0.0)
    await asyncio.sleep(max(0.0, begin - time.monotonic()))
    measured_from, end = begin + warmup, begin + warmup + seconds
    stop = asyncio.Event()
    out: dict = {"begin": begin, "measured_from": measured_from, "planned_end": end}
    tasks: dict[str, asyncio.Task] = {}
    score_recorder = Recorder()
    score = plan.get("score")
    if score:
        bodies = json.loads(Path(score["bodies"]).read_text())
        requests = [build_request("POST", host, "/score", json.dumps(b, separators=(",", ":")).encode(), headers)
                    for b in bodies]
        if score["mode"] == "closed":
            tasks["score"] = asyncio.create_task(closed_loop(host, port, requests, score["connections"], stop,
                                                             score.get("timeout", 10.0), score_recorder))
        else:
            tasks["score"] = asyncio.create_task(open_loop(host, port, requests, score["rate"], begin, end,
                                                           score.get("timeout", 10.0),
                                                           score.get("max_in_flight", 4096), score_recorder))
    if plan.get("ready_poll"):
        poll = plan["ready_poll"]
        tasks["ready"] = asyncio.create_task(ready_poll(host, port, poll.get("interval", 0.1),
                                                        poll.get("timeout", 1.0), stop))
    flood_recorder = Recorder()
    if plan.get("events_flood"):
        flood = plan["events_flood"]
        per = flood.get("events_per_request", 10)
        requests = []
        items, scenarios, prefix = flood["items"], flood["scenarios"], flood.get("user_prefix", "flood")
        for s in range(flood["senders"]):
            events = [{"user_id": f"{prefix}-{s}", "item_id": str(items[(s * per + k) % len(items)]),
                       "scenario": scenarios[k % len(scenarios)]} for k in range(per)]
            requests.append(build_request("POST", host, "/events",
                                          events_body(events, flood.get("body_format", "list"))))
        tasks["events_flood"] = asyncio.create_task(closed_loop(
            host, port, requests, flood["senders"], stop, flood.get("timeout", 5.0), flood_recorder, is_score=False,
            pause=flood.get("pause", 0.0)))
    ordered = plan.get("events_ordered")
    if ordered:
        await asyncio.sleep(max(0.0, measured_from - time.monotonic()))
        ordered_plan = json.loads(Path(ordered["plan"]).read_text())
        ordered_task = asyncio.create_task(events_ordered(host, port, ordered, ordered_plan))
        done, _ = await asyncio.wait({ordered_task}, timeout=ordered.get("max_seconds", 600))
        if ordered_task in done:
            out["events_ordered"] = ordered_task.result()
        else:
            ordered_task.cancel()
            out["events_ordered"] = {"error": "did not finish within max_seconds"}
        end = time.monotonic()
    else:
        await asyncio.sleep(max(0.0, end - time.monotonic()))
    out["end"] = end
    stop.set()
    if "score" in tasks:
        result = await tasks["score"]
        out["score"] = {**score_recorder.dump(), **(result or {})}
    if "ready" in tasks:
        out["ready"] = await tasks["ready"]
    if "events_flood" in tasks:
        await tasks["events_flood"]
        out["events_flood"] = flood_recorder.dump()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpu", type=int)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    result = asyncio.run(run(json.loads(Path(args.plan).read_text())))
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
