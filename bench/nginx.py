"""Debian's nginx as the proxy floor: finding or installing it, and its config.

nginx is a C reverse proxy, for WebSocket and for plain HTTP/1.1: what it costs per call
is roughly the least any proxy on this machine can cost, so every mcpfast figure is also
given as a ratio to it (over the same transport).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

NGINX_PATHS = ("/usr/sbin/nginx", "/usr/bin/nginx")
INSTALL_HINT = "run `make bench-deps` (it runs `apt-get install -y nginx-light`)"


class NginxMissingError(RuntimeError):
    pass


def find_nginx() -> str | None:
    for path in NGINX_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("nginx")


def _candidate(package: str) -> bool:
    """Whether apt knows an installable version of ``package``."""
    policy = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True,
                            timeout=60)
    for line in policy.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate":
            return value.strip() not in ("", "(none)")
    return False


def install_nginx(log: Path) -> str:
    """``apt-get install`` nginx-light (or nginx); returns the binary's path."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise NginxMissingError(
            f"nginx is not installed and cannot be installed here; {INSTALL_HINT}")
    with open(log, "ab") as out:
        def apt(*args: str) -> None:
            subprocess.run(["apt-get", *args], stdout=out, stderr=subprocess.STDOUT, check=True,
                           timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})

        if not (_candidate("nginx-light") or _candidate("nginx")):
            apt("update")
        package = "nginx-light" if _candidate("nginx-light") else "nginx"
        # policy-rc.d in containers keeps the packaged service from starting; the
        # benchmark runs its own nginx in the foreground with its own config either way.
        apt("install", "-y", "--no-install-recommends", package)
    path = find_nginx()
    if path is None:
        raise NginxMissingError(f"apt-get installed nginx but no binary was found; {INSTALL_HINT}")
    return path


def ensure_nginx(allow_install: bool, log: Path) -> str:
    path = find_nginx()
    if path is not None:
        return path
    if not allow_install:
        raise NginxMissingError(f"nginx is not installed; {INSTALL_HINT}")
    return install_nginx(log)


def nginx_version(path: str) -> str:
    out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().rpartition("/")[2] or "unknown"


def _compiled_modules(path: str) -> str:
    return subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10).stderr


def render_config(nginx: str, prefix: Path, port: int, upstream_port: int,
                  connections: int, nofile: int, transport: str = "websocket") -> str:
    """A reverse proxy on ``port`` in front of ``upstream_port``: WebSocket, or, with
    ``transport="http"``, plain HTTP/1.1 POSTs (Streamable HTTP answered as JSON).

    One worker, as mcpfast is one process. Each proxied connection holds two (client side
    and upstream side), and a burst of handshakes briefly holds more: with
    worker_connections at barely twice ``connections`` nginx starts closing connections
    ("worker_connections are not enough, reusing connections").

    Over HTTP nginx reuses upstream connections only from an ``upstream`` block with
    ``keepalive`` and with ``Connection: ""`` sent upstream; without them it would open
    (and pay for) a TCP connection per request, which is not the floor being measured.
    Both sides' ``keepalive_requests`` are lifted from their default of 1,000 so that no
    connection is closed inside a measured window.
    """
    temp_paths = ["client_body_temp_path", "proxy_temp_path"]
    compiled = _compiled_modules(nginx)
    temp_paths += [f"{module}_temp_path" for module in ("fastcgi", "uwsgi", "scgi")
                   if f"--without-http_{module}_module" not in compiled]
    temps = "\n".join(f"    {directive} {prefix}/{directive.split('_temp')[0]};"
                      for directive in temp_paths)
    worker_connections = max(1024, min(nofile - 32, 4 * connections + 1024))
    location = (_HTTP_LOCATION if transport == "http" else _WEBSOCKET_LOCATION).format(
        upstream_port=upstream_port)
    upstream = (_HTTP_UPSTREAM.format(upstream_port=upstream_port,
                                      keepalive=max(32, connections))
                if transport == "http" else "")
    return f"""\
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections {worker_connections};
    multi_accept on;
}}

http {{
    access_log off;
{temps}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
{upstream}
    server {{
        listen 127.0.0.1:{port} backlog=4096;

{location}    }}
}}
"""


_WEBSOCKET_LOCATION = """\
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
"""

_HTTP_UPSTREAM = """
    upstream echo {{
        server 127.0.0.1:{upstream_port};
        keepalive {keepalive};
        keepalive_requests 100000000;
        keepalive_timeout 3600s;
    }}
"""

_HTTP_LOCATION = """\
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            keepalive_timeout 3600s;
            keepalive_requests 100000000;
        }}
"""
