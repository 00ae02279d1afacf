"""nginx on this machine: its version, and ``nginx -t`` on a generated site file.

The check runs nginx in a throwaway prefix (its own pid, error log, temp paths
and a minimal nginx.conf that includes the site), so it needs neither root nor
/etc/nginx. ``nginx -t`` binds the listen ports and opens the certificates:
the throwaway copy uses free high ports and its own log directory, and a
throwaway certificate where the real one does not exist yet (before certbot).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from . import trial
from .context import DeployContext


def find_nginx() -> str | None:
    return trial.find_program("nginx")


def installed_version(binary: str | None = None) -> tuple[int, int, int] | None:
    binary = binary or find_nginx()
    if not binary:
        return None
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def minimal_conf(prefix: Path, site: Path, run_as: str | None = None,
                 connections: int = 1024) -> str:
    """An nginx.conf that only includes ``site``, with every path under ``prefix``."""
    temp = prefix / "temp"
    user = f"user {run_as};\n" if run_as else ""
    return f"""{user}worker_processes 1;
worker_rlimit_nofile {connections * 2};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
# Lets a reload finish instead of holding old WebSockets (and certificates) forever.
worker_shutdown_timeout 30s;
events {{ worker_connections {connections}; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {site};
}}
"""


def _error_line(output: str) -> str:
    """nginx's own first error, without its timestamp and pid."""
    lines = [ln for ln in output.splitlines() if "[emerg]" in ln or "[error]" in ln]
    line = lines[0] if lines else (output.strip().splitlines() or [""])[-1]
    return re.sub(r"^[\d/]+ [\d:]+ (\[\w+\]) \d+#\d+: ", r"\1 ", line)


def _run(binary: str, prefix: Path, site: Path) -> tuple[bool, str]:
    (prefix / "temp").mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(minimal_conf(prefix, site))
    result = subprocess.run([binary, "-t", "-q", "-p", str(prefix), "-c", str(conf)],
                            capture_output=True, text=True, timeout=30)
    return result.returncode == 0, result.stderr + result.stdout


def check(context: DeployContext, render_site: Callable[[DeployContext], str]
          ) -> trial.CheckResult:
    """Render the site for a throwaway prefix and run ``nginx -t`` on it."""
    return trial.run_check(context, render_site, server="nginx", binary=find_nginx(),
                           package="nginx-light", site_name="site.conf", run=_run,
                           error_line=_error_line)
