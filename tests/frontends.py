"""Helpers the front-end e2e tests share (nginx, Apache, Caddy): PEM files, polling and
sslyze. The local ACME server (``pebble``) is a fixture in conftest.py."""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from types import SimpleNamespace

from channels.db import database_sync_to_async

from tests.helpers import ROOT, free_port, require_tool, wait_for, write_pem  # noqa: F401
from wsops import tokens
from wsops.deploy.certs import mint
from wsops.testing import LiveSocket


def sslyze_binary() -> str:
    """sslyze runs from its own virtualenv (it pins another cryptography than certbot)."""
    extra = os.path.dirname(os.environ.get("WSOPS_SSLYZE", ""))
    return require_tool("sslyze", also_in=(extra, str(ROOT / ".venv-sslyze" / "bin")),
                        how="make test creates .venv-sslyze")


def certbot_stage(root: Path, pebble, daphne_server) -> SimpleNamespace:
    """What a certbot test renders a site with, before certbot ran: a daphne worker, a
    throwaway certificate for app.wsops.test (``initial``: the --cert/--key options),
    the options every wsdeploy call shares (``common``: pebble's HTTP-01 port as the
    site's http port) and where certbot puts its lineage (``live``)."""
    leaf, key, ca = mint(["app.wsops.test"])  # the certificate before certbot's
    certs = root / "initial"
    certs.mkdir()
    write_pem(certs / "fullchain.pem", leaf, ca)
    write_pem(certs / "privkey.pem", key)
    socket_path = str(root / "daphne-1.sock")
    daphne_server(unix_socket=socket_path, extra_args=["--proxy-headers"])
    https_port = free_port()
    (root / "logs").mkdir()
    common = ["--domain", "app.wsops.test", "--upstream", f"unix:{socket_path}",
              "--http-port", str(pebble.http_port), "--https-port", str(https_port),
              "--log-dir", str(root / "logs"), "--acme-webroot", str(root / "acme")]
    return SimpleNamespace(
        https_port=https_port, common=common, live=root / "letsencrypt" / "live" /
        "app.wsops.test", initial=["--cert", str(certs / "fullchain.pem"), "--key",
                                   str(certs / "privkey.pem")])


async def assert_real_client_address(stack, make_user) -> None:
    """wss through the front end from 127.0.0.2 with a forged X-Forwarded-For: the socket
    works, and the app sees 127.0.0.2 (neither the proxy's address nor the forged one)."""
    user = await database_sync_to_async(make_user)("alice")
    secret = (await database_sync_to_async(tokens.issue)(user))[1]
    url = f"wss://localhost:{stack.https_port}/ws/chat/lobby/"
    client = await LiveSocket.open(url, token=secret, ssl=stack.ssl,
                                   headers={"X-Forwarded-For": "6.6.6.6"},
                                   local_addr=("127.0.0.2", 0), host="127.0.0.1")
    assert client.accepted and client.subprotocol == "wsops"
    await client.send_json({"action": "echo", "text": "through the front end"})
    assert (await client.recv_json())["text"] == "through the front end"
    await client.send_json({"action": "whoami"})
    me = await client.recv_json()
    assert me["ip"] == "127.0.0.2"
    await client.close()


def assert_redirects_and_serves_acme(stack) -> None:
    """Plain http: a redirect to https (path and query kept), except the ACME challenge,
    served from the webroot."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=10)
    connection.request("GET", "/ws/chat/lobby/?x=1", headers={"Host": "localhost"})
    response = connection.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == \
        f"https://localhost:{stack.https_port}/ws/chat/lobby/?x=1"
    challenge = stack.acme / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    (challenge / "token123").write_text("proof")
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=10)
    connection.request("GET", "/.well-known/acme-challenge/token123",
                       headers={"Host": "localhost"})
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"proof")
