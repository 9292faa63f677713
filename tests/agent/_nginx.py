"""Debian's nginx as a test (and benchmark) service: a config that keeps
everything in one directory, listens on 127.0.0.1 only, and stays in the
foreground (``daemon off;``) so a supervisor can watch its master."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

NGINX = "/usr/sbin/nginx"


def free_port() -> int:
    """A free high port on 127.0.0.1 (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_conf(run: Path, port: int, body: str) -> str:
    """An nginx.conf answering ``body`` on 127.0.0.1:``port``; pid, logs and
    temp files under ``run``."""
    return (
        "daemon off;\nworker_processes 1;\n"
        f"pid {run}/nginx.pid;\nerror_log {run}/error.log notice;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"  access_log off;\n  client_body_temp_path {run}/body;\n"
        f"  proxy_temp_path {run}/proxy;\n  fastcgi_temp_path {run}/fastcgi;\n"
        f"  uwsgi_temp_path {run}/uwsgi;\n  scgi_temp_path {run}/scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}; "
        f'location / {{ return 200 "{body}\\n"; }} }}\n'
        "}\n"
    )


def http_get(port: int, timeout: float = 2) -> str | None:
    """The body 127.0.0.1:``port`` answers now (stripped), or None if nothing answers."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", "/")
        body = conn.getresponse().read().decode()
        conn.close()
        return body.strip()
    except OSError:
        return None


def nginx_policy(
    conf_path: str,
    real_conf: Path,
    run: Path,
    conf: str,
    backend: str,
    file_extra: str = "",
    service_extra: str = "",
) -> str:
    """A policy: nginx's config at ``conf_path`` (``real_conf`` under the root)
    notifies a reload of service ``web`` on ``backend``, which requires it.
    ``file_extra``/``service_extra``: more TOML lines for either table."""
    return (
        f'[[file]]\npath = "{conf_path}"\ncontent = """{conf}"""\nmode = "0644"\n'
        f'notify = ["service:web"]\n{file_extra}\n'
        f'[[service]]\nname = "web"\nbackend = "{backend}"\n'
        f'command = ["{NGINX}", "-e", "{run}/error.log", "-c", "{real_conf}"]\n'
        'on_notify = "reload"\nrestart_delay = 0.1\n'
        f'requires = ["file:{conf_path}"]\n{service_extra}'
    )
