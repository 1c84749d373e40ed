"""A delaying TCP proxy in front of Redis, run in its own process (`python -m loadtest.chaos.proxy`).

It plays the network between the service and its feature store:
- every chunk Redis sends back is delivered `delay` seconds after it arrived (in order), so each
  request/response round trip, including the ones redis-py makes when it opens a connection, costs
  `delay` more; bytes towards Redis pass at once. A change of the delay applies to chunks read
  from then on (already queued ones keep their time, and nothing overtakes them);
- `down` makes the address refuse connections, as a host whose Redis was killed does: the listening
  socket is closed and every open connection is reset (RST); `up` listens again;
- a connection whose upstream refuses (Redis gone) is reset at once, too.

Control: one line per command on a TCP control port, answered with one JSON line:
`delay <seconds>`, `down`, `up`, `stats`, `ping`. `ProxyControl` is the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time
from collections import deque

CHUNK = 1 << 16


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with an RST (SO_LINGER 0): the peer sees a reset, not an orderly end."""
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class DelayProxy:
    def __init__(self, listen_host: str, listen_port: int, target_host: str, target_port: int, delay: float = 0.0):
        self.listen_host, self.listen_port = listen_host, listen_port
        self.target_host, self.target_port = target_host, target_port
        self.delay = delay
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self.stats = {"accepted": 0, "upstream_refused": 0, "reset_by_down": 0}

    async def up(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port,
                                                     reuse_address=True, backlog=1024)

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for client, upstream in list(self.connections):
            self.stats["reset_by_down"] += 1
            _reset(client)
            if upstream is not None:
                _reset(upstream)
        self.connections.clear()

    @property
    def is_up(self) -> bool:
        return self.server is not None

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.stats["accepted"] += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), 5.0)
        except (OSError, asyncio.TimeoutError):
            self.stats["upstream_refused"] += 1
            _reset(client_writer)
            return
        pair = (client_writer, up_writer)
        self.connections.add(pair)
        try:
            await asyncio.gather(self._forward(client_reader, up_writer), self._backward(up_reader, client_writer),
                                 return_exceptions=True)
        finally:
            self.connections.discard(pair)
            for writer in pair:
                if not writer.transport.is_closing():
                    writer.transport.abort()

    @staticmethod
    async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to Redis: no delay."""
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _backward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Redis to client: each chunk delivered `delay` after it arrived, in order."""
        queue: deque[tuple[float, bytes]] = deque()
        wake = asyncio.Event()
        ended = False

        async def deliver() -> None:
            while True:
                while not queue:
                    if ended:
                        return
                    wake.clear()
                    await wake.wait()
                due, data = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                queue.popleft()
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(CHUNK):
                if self.delay <= 0 and not queue:
                    writer.write(data)
                    await writer.drain()
                    continue
                queue.append((time.monotonic() + self.delay, data))
                wake.set()
        finally:
            ended = True
            wake.set()
            try:
                await asyncio.wait_for(sender, self.delay + 5.0)
            except (Exception, asyncio.TimeoutError):
                sender.cancel()
            if not writer.transport.is_closing():
                writer.close()

    async def command(self, line: str) -> dict:
        words = line.split()
        if not words:
            return {"ok": False, "error": "empty command"}
        name = words[0].lower()
        if name == "delay" and len(words) == 2:
            self.delay = max(0.0, float(words[1]))
        elif name == "down":
            await self.down()
        elif name == "up":
            await self.up()
        elif name not in ("stats", "ping"):
            return {"ok": False, "error": f"unknown command {line!r}"}
        return {"ok": True, "delay": self.delay, "up": self.is_up, "open_connections": len(self.connections),
                **self.stats}


async def serve(proxy: DelayProxy, control_host: str, control_port: int, ready_file: str | None) -> None:
    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await proxy.command(line.decode().strip())
                except Exception as error:   # a bad command must not stop the proxy
                    answer = {"ok": False, "error": repr(error)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    await proxy.up()
    control_server = await asyncio.start_server(control, control_host, control_port, reuse_address=True)
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(str(os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    control_server.close()
    await proxy.down()


class ProxyControl:
    """Client of a running proxy's control port; every call bounded by `timeout` seconds."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0):
        self.address, self.timeout = (host, port), timeout

    def send(self, command: str) -> dict:
        with socket.create_connection(self.address, timeout=self.timeout) as sock:
            sock.settimeout(self.timeout)
            sock.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
        if not answer.get("ok"):
            raise RuntimeError(f"proxy refused {command!r}: {answer}")
        return answer

    def set_delay(self, seconds: float) -> dict:
        return self.send(f"delay {seconds}")

    def down(self) -> dict:
        return self.send("down")

    def up(self) -> dict:
        return self.send("up")

    def stats(self) -> dict:
        return self.send("stats")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to each round trip")
    parser.add_argument("--ready-file", help="written (with the pid) once both ports listen")
    args = parser.parse_args(argv)
    proxy = DelayProxy(args.host, args.listen_port, args.target_host, args.target_port, args.delay)
    asyncio.run(serve(proxy, args.host, args.control_port, args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
