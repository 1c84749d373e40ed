"""The repository's nginx configuration (deploy/nginx/nginx.conf), rendered for loopback upstreams.

The measured configuration is the shipped one: the file is read as it is and only what ties it to
its container is substituted, each substitution required to match exactly once (so a change of the
shipped file's shape fails here, loudly, instead of silently measuring something else):

- the upstream's `server service:8000 resolve ...;` becomes one `server 127.0.0.1:PORT ...;` per
  replica with the same parameters less `resolve` (Docker DNS re-resolution; on loopback the
  addresses are fixed, and open-source nginx only has `resolve` from 1.27.3);
- `listen 8000;` becomes `listen 127.0.0.1:PORT;`;
- `pid` and the five `*_temp_path` directives move from /tmp to the run's own directory (several
  nginx instances at once, nothing left behind).

Everything else (least_conn, the upstream keep-alive, passive health checks, the header/body limits
and timeouts, proxy_next_upstream, worker_processes) is kept byte for byte.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loadtest.procs import LOOPBACK, GroupProcess, http_ok, pinned, wait_until

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
TEMP_PATHS = ("client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path")


class RenderError(ValueError):
    """The shipped configuration no longer has the shape this renderer substitutes."""


@dataclass(frozen=True)
class Rendered:
    text: str
    substituted: list[tuple[str, str]]    # (shipped line, rendered line(s)), for the report


def _sub_once(text: str, pattern: str, replace, what: str, flags: int = re.MULTILINE) -> tuple[str, tuple[str, str]]:
    matches = list(re.finditer(pattern, text, flags))
    if len(matches) != 1:
        raise RenderError(f"expected exactly one {what} in the shipped nginx.conf, found {len(matches)} "
                          f"(pattern {pattern!r})")
    match = matches[0]
    new = replace(match) if callable(replace) else match.expand(replace)
    return text[:match.start()] + new + text[match.end():], (match.group(0).strip(), new.strip())


def render(template: str, upstreams: list[int | str], listen_port: int | str, run_dir: Path) -> Rendered:
    """The shipped config with the upstream servers, the listen port and the run-time paths substituted."""
    if not upstreams:
        raise ValueError("at least one upstream port")
    run_dir = Path(run_dir)
    subs = []
    text = template

    # the upstream block named sainet: its (single) server line
    block = re.search(r"^(\s*)upstream\s+sainet\s*\{(.*?)^\1\}", text, re.MULTILINE | re.DOTALL)
    if block is None:
        raise RenderError("no `upstream sainet { ... }` block in the shipped nginx.conf")
    body = block.group(2)

    def servers(match: re.Match) -> str:
        indent, params = match.group(1), [p for p in match.group(3).split() if p != "resolve"]
        return "\n".join(f"{indent}server {LOOPBACK}:{port}{''.join(' ' + p for p in params)};" for port in upstreams)

    body, sub = _sub_once(body, r"^([ \t]*)server\s+(\S+)((?:\s+[^;\s]+)*)\s*;", servers, "upstream `server` line")
    subs.append(sub)
    text = text[:block.start(2)] + body + text[block.end(2):]

    text, sub = _sub_once(text, r"^([ \t]*)listen\s+8000\s*;",
                          lambda m: f"{m.group(1)}listen {LOOPBACK}:{listen_port};", "`listen 8000;`")
    subs.append(sub)
    text, sub = _sub_once(text, r"^([ \t]*)pid\s+\S+\s*;", lambda m: f"{m.group(1)}pid {run_dir / 'nginx.pid'};",
                          "`pid` directive")
    subs.append(sub)
    for directive in TEMP_PATHS:
        text, sub = _sub_once(text, rf"^([ \t]*){directive}\s+/tmp/(\S+)\s*;",
                              lambda m, d=directive: f"{m.group(1)}{d} {run_dir / m.group(2)};",
                              f"`{directive} /tmp/...` directive")
        subs.append(sub)
    return Rendered(text, subs)


def render_file(upstreams: list[int], listen_port: int, run_dir: Path, template_path: Path = SHIPPED_CONF) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)     # nginx's workers (nobody, when started as root) create and use the temp dirs
    path = run_dir / "nginx.conf"
    path.write_text(render(template_path.read_text(), upstreams, listen_port, run_dir).text)
    return path


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()),
                                         None)


def nginx_command(binary: str, conf: Path) -> list[str]:
    # -e stderr: the compiled-in error log (/var/log/nginx/...) is never opened; -p: relative paths
    # resolve in the run's directory; daemon off: nginx stays this process's child (a process group).
    return [binary, "-e", "stderr", "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"]


def check_config(binary: str, conf: Path, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """`nginx -t` on a rendered file."""
    return subprocess.run([binary, "-t", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)],
                          capture_output=True, text=True, timeout=timeout)


class Nginx:
    """nginx from the shipped config, in front of `upstreams` on loopback; `with Nginx(...) as n:`."""

    def __init__(self, name: str, upstreams: list[int], listen_port: int, run_dir: Path, log_dir: Path,
                 binary: str | None = None, cpus: list[int] | None = None):
        self.binary = binary or nginx_binary()
        if self.binary is None:
            raise RuntimeError("nginx is not installed (needed for the replicas behind nginx)")
        self.name, self.port, self.upstreams = name, listen_port, upstreams
        self.conf = render_file(upstreams, listen_port, run_dir)
        self.proc = GroupProcess(name, pinned(nginx_command(self.binary, self.conf), cpus),
                                 Path(log_dir) / f"{name}.log")

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 20.0) -> "Nginx":
        checked = check_config(self.binary, self.conf)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx -t failed on {self.conf}: {checked.stderr.strip()}")
        self.proc.start()
        wait_until(lambda: http_ok(f"{self.url}/nginx-health"), timeout, f"{self.name} to answer /nginx-health",
                   alive=self.proc.check_alive)
        wait_until(lambda: http_ok(f"{self.url}/v2/health/ready", timeout=2.0), timeout,
                   f"a replica to answer ready through {self.name}", alive=self.proc.check_alive)
        return self

    def stop(self) -> None:
        self.proc.stop(grace_seconds=10)

    def __enter__(self) -> "Nginx":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
