"""What every ``--check`` shares: a trial copy of the context and the result.

A check renders the site once more for a throwaway directory: free high ports
(the real ones may be taken, or need root), logs in that directory, and a
throwaway certificate where the configured one does not exist yet (before
certbot). The server's own checker (``nginx -t``, ``apachectl -t``, ``caddy
validate``) then reads it.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .context import DeployContext


def find_program(*names: str) -> str | None:
    """The first of ``names`` on PATH or in /usr/sbin, /usr/local/sbin (often not on PATH)."""
    for name in names:
        for found in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/local/sbin/{name}"):
            if found and Path(found).exists():
                return found
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class CheckResult:
    ok: bool
    output: str
    notes: list[str]
    error_line: str = ""


def context_for(context: DeployContext, directory: Path) -> tuple[DeployContext, list[str]]:
    """The context as the check renders it, and notes on what was replaced."""
    from .certs import write_throwaway_pair

    (directory / "logs").mkdir(exist_ok=True)
    attempt = replace(context, http_port=free_port(), https_port=free_port(),
                      log_dir=str(directory / "logs"))
    notes: list[str] = []
    if context.cert and not (Path(context.cert).exists() and Path(context.key).exists()):
        cert, key = write_throwaway_pair(directory, context.domains)
        attempt = replace(attempt, cert=str(cert), key=str(key))
        notes.append(f"{context.cert} does not exist yet: checked with a throwaway "
                     "certificate")
    return attempt, notes


def run_check(context: DeployContext, render_site: Callable[[DeployContext], str], *,
              server: str, binary: str | None, package: str, site_name: str,
              run: Callable[[str, Path, Path], tuple[bool, str]],
              error_line: Callable[[str], str],
              adjust: Callable[[DeployContext], DeployContext] | None = None) -> CheckResult:
    """Render the site as ``site_name`` in a throwaway directory and ``run(binary,
    directory, site)`` the server's checker on it: (ok, its output)."""
    if binary is None:
        return CheckResult(False, f"{server} is not installed (Debian: apt-get install "
                                  f"{package})", [])
    with tempfile.TemporaryDirectory(prefix=f"wsops-{server}-check-") as tmp:
        prefix = Path(tmp)
        attempt, notes = context_for(context, prefix)
        site = prefix / site_name
        site.write_text(render_site(adjust(attempt) if adjust else attempt))
        ok, output = run(binary, prefix, site)
        output = output.replace(str(prefix), "<check>")
        return CheckResult(ok, output, notes, error_line(output))
