"""loadtest/scale: the shipped nginx.conf rendered for loopback upstreams (only the container-bound
lines change; `nginx -t` accepts it; a live nginx from it spreads requests over two upstreams and
keeps the shipped body limit), and the CPU plan. No timing is asserted."""

from __future__ import annotations

import http.client
import http.server
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:      # loadtest/ is not an installed package
    sys.path.insert(0, str(REPO))

from loadtest.scale.cli import parse_cpus, plan_cpus  # noqa: E402
from loadtest.scale.nginx import (SHIPPED_CONF, Nginx, RenderError, check_config, nginx_binary,  # noqa: E402
                                  render, render_file)
from service.testing import free_port  # noqa: E402


def test_rendering_substitutes_only_the_container_bound_lines(tmp_path):
    shipped = SHIPPED_CONF.read_text()
    rendered = render(shipped, [9001, 9002], 9100, tmp_path)
    substituted = {old for old, _ in rendered.substituted}
    assert len(rendered.substituted) == 8
    kept = [line for line in shipped.splitlines() if line.strip() not in substituted]
    # every other line of the shipped file survives, in order
    remaining = iter(rendered.text.splitlines())
    assert all(any(line == other for other in remaining) for line in kept)
    text = rendered.text
    assert "server 127.0.0.1:9001 max_fails=3 fail_timeout=10s;" in text
    assert "server 127.0.0.1:9002 max_fails=3 fail_timeout=10s;" in text
    assert "listen 127.0.0.1:9100;" in text and "listen 8000;" not in text
    assert "service:8000" not in text and " resolve " not in text
    assert "/tmp/" not in text.replace(str(tmp_path), "RUN")
    for directive in ("least_conn;", "keepalive 32;", "keepalive_timeout 4s;", "client_max_body_size 1m;",
                      "large_client_header_buffers 4 32k;", "proxy_next_upstream error timeout http_502 http_503;"):
        assert directive in text


def test_rendering_fails_loudly_when_the_shipped_shape_changes(tmp_path):
    shipped = SHIPPED_CONF.read_text()
    with pytest.raises(RenderError, match="listen 8000"):
        render(shipped.replace("listen 8000;", "listen 8080;"), [1], 2, tmp_path)
    with pytest.raises(RenderError, match="upstream"):
        render(shipped.replace("upstream sainet", "upstream other"), [1], 2, tmp_path)
    with pytest.raises(ValueError):
        render(shipped, [], 2, tmp_path)


def test_cpu_plan():
    assert parse_cpus("0,2-3") == [0, 2, 3] and parse_cpus(None) is None and parse_cpus("unpinned") is None
    cpus = sorted(__import__("os").sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU: two replicas cannot be pinned apart")
    replicas, load, apart = plan_cpus(None, None)
    assert replicas == cpus[:2]
    assert (load, apart) == ((cpus[2:], True) if len(cpus) > 2 else (None, False))
    with pytest.raises(SystemExit):
        plan_cpus([cpus[0], cpus[0]], None)


needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")


@needs_nginx
def test_nginx_accepts_the_rendered_config(tmp_path):
    conf = render_file([free_port(), free_port()], free_port(), tmp_path / "run")
    answer = check_config(nginx_binary(), conf)
    assert answer.returncode == 0, answer.stderr


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = self.server.name.encode()
        self.server.hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@needs_nginx
def test_live_nginx_spreads_over_two_upstreams_and_keeps_the_body_limit(tmp_path):
    upstreams = []
    try:
        for name in "AB":
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
            server.name, server.hits, server.daemon_threads = name, 0, True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            upstreams.append(server)
        ports = [s.server_address[1] for s in upstreams]
        with Nginx("nginx-test", ports, free_port(), tmp_path / "run", tmp_path) as nginx:
            names = set()
            for _ in range(20):
                with urllib.request.urlopen(urllib.request.Request(f"{nginx.url}/score", data=b"{}"),
                                            timeout=5) as answer:
                    names.add(answer.read().decode())
            assert names == {"A", "B"}
            # nginx answers a declared body above client_max_body_size (1m) from the headers alone
            connection = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=5)
            try:
                connection.putrequest("POST", "/score")
                connection.putheader("Content-Length", "1100000")
                connection.endheaders()
                assert connection.getresponse().status == 413
            finally:
                connection.close()
            assert sum(s.hits for s in upstreams) >= 20 + 1    # the readiness probe through nginx, then ours
            pid = nginx.proc.pid
        assert not nginx.proc.alive()
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        for server in upstreams:
            server.shutdown()
            server.server_close()
