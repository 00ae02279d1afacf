"""Apache on this machine: its binaries and modules, and ``apachectl -t`` on a site file.

The check runs in a throwaway ServerRoot (``apache-trial.conf``: its own pid, lock,
runtime and log files, ``LoadModule`` lines for the modules the site needs, and
the site), so it needs neither root nor ``/etc/apache2`` nor ``a2enmod``. The
trial copy of the site uses free high ports, its own log directory and a
throwaway certificate where the real one does not exist yet (before certbot).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from . import templates, trial
from .context import DeployContext

# (module identifier, file) for every module the site uses; a2enmod takes the file's
# name without "mod_" and ".so". mpm_event and authz_core come with any Debian install.
MODULES = [
    ("mpm_event_module", "mod_mpm_event.so"), ("authz_core_module", "mod_authz_core.so"),
    ("alias_module", "mod_alias.so"), ("mime_module", "mod_mime.so"),
    ("rewrite_module", "mod_rewrite.so"), ("headers_module", "mod_headers.so"),
    ("setenvif_module", "mod_setenvif.so"), ("socache_shmcb_module", "mod_socache_shmcb.so"),
    ("ssl_module", "mod_ssl.so"), ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"), ("slotmem_shm_module", "mod_slotmem_shm.so"),
    ("proxy_balancer_module", "mod_proxy_balancer.so"),
    ("lbmethod_bybusyness_module", "mod_lbmethod_bybusyness.so"),
]
ENABLE = [file.removeprefix("mod_").removesuffix(".so") for _, file in MODULES[2:]]
MODULE_DIRS = ["/usr/lib/apache2/modules", "/usr/lib64/httpd/modules", "/usr/lib/httpd/modules",
               "/usr/local/apache2/modules"]


def find_httpd() -> str | None:
    """The server binary (Debian calls it apache2, others httpd)."""
    return trial.find_program("apache2", "httpd")


def find_apachectl() -> str | None:
    return trial.find_program("apachectl", "apache2ctl")


def modules_dir() -> str | None:
    return next((d for d in MODULE_DIRS if Path(d, "mod_ssl.so").exists()), None)


def trial_conf(server_root: Path, site: Path, run_as: tuple[str, str] | None = None) -> str:
    """A whole configuration (``apache-trial.conf``) that serves ``site`` from a throwaway
    ``server_root``; ``run_as`` (user, group) when started as root."""
    (server_root / "run").mkdir(parents=True, exist_ok=True)
    return templates.render("apache-trial.conf", {
        "server_root": server_root, "site": site, "modules": MODULES,
        "modules_dir": modules_dir() or MODULE_DIRS[0],
        "mime_types": "/etc/mime.types" if Path("/etc/mime.types").exists() else "/dev/null",
        "run_user": run_as[0] if run_as else "", "run_group": run_as[1] if run_as else ""})


def _error_line(output: str) -> str:
    """Apache's own first complaint (a syntax error names the file and line)."""
    lines = [ln for ln in output.splitlines() if ln.strip() and "Syntax OK" not in ln]
    return re.sub(r"^\[[^]]*\] ", "", lines[0]) if lines else output.strip()


def _run(binary: str, prefix: Path, site: Path) -> tuple[bool, str]:
    conf = prefix / "apache2.conf"
    conf.write_text(trial_conf(prefix, site))
    # apachectl reads /etc/apache2/envvars on Debian; -f replaces the whole config.
    result = subprocess.run([binary, "-t", "-f", str(conf)], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "LANG": "C"})
    return result.returncode == 0, result.stderr + result.stdout


def check(context: DeployContext, render_site: Callable[[DeployContext], str]
          ) -> trial.CheckResult:
    """Render the site for a throwaway ServerRoot and run ``apachectl -t`` on it."""
    return trial.run_check(context, render_site, server="apache",
                           binary=(find_apachectl() or find_httpd()) if modules_dir() else None,
                           package="apache2", site_name="site.conf", run=_run,
                           error_line=_error_line)
