"""Helpers more than one test file uses (fixtures that start things live in conftest.py).

- ``write_pem``: certificates and keys from ``wsops.deploy.certs.mint`` as PEM files.
- ``Nginx``: a real nginx serving a rendered site from a private prefix.
- ``render_site``: ``wsdeploy nginx`` into a file.
- ``wait_for``: poll a condition with a generous deadline (log lines are written late).
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from django.core.management import call_command

from tests.conftest import require_tool, wait_for_port
from wsops.deploy.certs import _pem_key
from wsops.deploy.nginx import minimal_conf


def write_pem(path: Path, *items) -> Path:
    data = b""
    for item in items:
        data += item.public_bytes(serialization.Encoding.PEM) if hasattr(item, "public_bytes") \
            else _pem_key(item)
    path.write_bytes(data)
    return path


class Nginx:
    def __init__(self, prefix: Path, site: Path):
        self.binary = require_tool("nginx")
        self.prefix = prefix
        (prefix / "temp").mkdir(exist_ok=True)
        run_as = "root root" if os.geteuid() == 0 else None
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(minimal_conf(prefix, site, run_as=run_as))
        self.process = None

    def start(self, port: int) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(port, process=self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def render_site(path: Path, *args: str) -> None:
    call_command("wsdeploy", "nginx", "--output", str(path), "--force", *args,
                 stdout=io.StringIO(), stderr=io.StringIO())


def wait_for(predicate, timeout: float = 30, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.1)
