"""Caddy on this machine, and ``caddy adapt`` + ``caddy validate`` on a Caddyfile.

``adapt`` turns the Caddyfile into Caddy's JSON (syntax errors name the line);
``validate`` then loads that config the way ``caddy run`` would, without serving
it. Both run with HOME and the XDG directories in a throwaway directory, so the
check neither reads nor writes Caddy's certificate storage, and on a trial copy
of the Caddyfile (free high ports, logs in that directory, the admin endpoint
off, a throwaway certificate where the configured one does not exist yet).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import trial
from .context import DeployContext


def find_caddy() -> str | None:
    return trial.find_program("caddy")


def isolated_env(home: Path) -> dict[str, str]:
    """Caddy's storage (certificates, ACME accounts) and autosave under ``home``."""
    return {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config")}


def adapt(binary: str, caddyfile: Path, env: dict[str, str]) -> tuple[dict[str, Any] | None,
                                                                         str]:
    """(Caddy's JSON config, or None when the Caddyfile does not adapt; caddy's output)."""
    result = subprocess.run([binary, "adapt", "--config", str(caddyfile), "--adapter",
                             "caddyfile"], capture_output=True, text=True, timeout=60, env=env)
    if result.returncode != 0:
        return None, result.stderr + result.stdout
    return json.loads(result.stdout), result.stderr


def error_line(output: str) -> str:
    """caddy's message: the ``Error: ...`` line, or the last line it printed."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or [""])[0]


def _run(binary: str, prefix: Path, caddyfile: Path) -> tuple[bool, str]:
    env = isolated_env(prefix)
    config, output = adapt(binary, caddyfile, env)
    if config is None:
        return False, output
    result = subprocess.run([binary, "validate", "--config", str(caddyfile), "--adapter",
                             "caddyfile"], capture_output=True, text=True, timeout=60, env=env)
    return result.returncode == 0, result.stderr + result.stdout


def check(context: DeployContext, render_site: Callable[[DeployContext], str]
          ) -> trial.CheckResult:
    """Render the Caddyfile for a throwaway directory; ``caddy adapt``, then ``validate``."""
    return trial.run_check(context, render_site, server="caddy", binary=find_caddy(),
                           package="caddy", site_name="Caddyfile", run=_run,
                           error_line=error_line,
                           adjust=lambda attempt: replace(attempt, caddy_admin="off"))
