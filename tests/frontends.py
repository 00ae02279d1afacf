"""Helpers the front-end e2e tests share (nginx, Apache, Caddy): PEM files, polling and
sslyze. The local ACME server (``pebble``) is a fixture in conftest.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.conftest import ROOT, require_tool
from wsops.deploy.certs import _pem_key


def write_pem(path: Path, *items) -> Path:
    data = b""
    for item in items:
        data += item.public_bytes(serialization.Encoding.PEM) if hasattr(item, "public_bytes") \
            else _pem_key(item)
    path.write_bytes(data)
    return path


def wait_for(predicate, timeout: float = 30, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.1)


def sslyze_binary() -> str:
    """sslyze runs from its own virtualenv (it pins another cryptography than certbot)."""
    extra = os.path.dirname(os.environ.get("WSOPS_SSLYZE", ""))
    return require_tool("sslyze", also_in=(extra, str(ROOT / ".venv-sslyze" / "bin")),
                        how="make test creates .venv-sslyze")
