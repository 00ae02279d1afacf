"""The rendered nginx, served for real on loopback with TLS in front of two daphne workers;
its TLS checked by sslyze; certbot issuing through it from a local ACME server (pebble)."""

import http.client
import io
import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command

from tests.conftest import ROOT, free_port, require_tool, wait_for_port
from wsops import tickets, tokens
from wsops.deploy.certs import _pem_key, mint
from wsops.deploy.nginx import minimal_conf
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


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


@pytest.fixture
def stack(request, tmp_path, daphne_server):
    """nginx on two high ports, TLS from a throwaway CA, two daphne workers on unix sockets."""
    profile = getattr(request, "param", "intermediate")
    leaf, key, ca = mint(["localhost", "127.0.0.1"])
    certs = tmp_path / "certs"
    certs.mkdir()
    fullchain = write_pem(certs / "fullchain.pem", leaf, ca)
    privkey = write_pem(certs / "privkey.pem", key)
    ca_file = write_pem(certs / "ca.pem", ca)
    sockets = [str(tmp_path / f"daphne-{n}.sock") for n in (1, 2)]
    workers = [daphne_server(unix_socket=s, extra_args=["--proxy-headers"]) for s in sockets]
    http_port, https_port = free_port(), free_port()
    (tmp_path / "logs").mkdir()
    site = tmp_path / "site.conf"
    render_site(site, "--domain", "localhost", "--upstream", f"unix:{sockets[0]}",
                "--upstream", f"unix:{sockets[1]}", "--http-port", str(http_port),
                "--https-port", str(https_port), "--log-dir", str(tmp_path / "logs"),
                "--cert", str(fullchain), "--key", str(privkey),
                "--acme-webroot", str(tmp_path / "acme"), "--tls-profile", profile)
    server = Nginx(tmp_path, site)
    server.start(https_port)
    context = ssl.create_default_context(cafile=str(ca_file))
    yield type("Stack", (), {"http_port": http_port, "https_port": https_port, "ssl": context,
                             "ca_file": ca_file, "logs": tmp_path / "logs", "workers": workers,
                             "acme": tmp_path / "acme", "nginx": server})
    server.stop()


async def test_wss_through_nginx_sees_the_real_client_address(stack, make_user):
    user = await database_sync_to_async(make_user)("alice")
    secret = (await database_sync_to_async(tokens.issue)(user))[1]
    url = f"wss://localhost:{stack.https_port}/ws/chat/lobby/"
    socket = await LiveSocket.open(url, token=secret, ssl=stack.ssl,
                                   headers={"X-Forwarded-For": "6.6.6.6"},
                                   local_addr=("127.0.0.2", 0), host="127.0.0.1")
    assert socket.accepted and socket.subprotocol == "wsops"
    await socket.send_json({"action": "echo", "text": "through nginx"})
    assert (await socket.recv_json())["text"] == "through nginx"
    await socket.send_json({"action": "whoami"})
    me = await socket.recv_json()
    assert me["ip"] == "127.0.0.2"  # not nginx's address, not the forged one
    await socket.close()


async def test_plain_http_redirects_and_serves_only_acme(stack):
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=5)
    connection.request("GET", "/ws/chat/lobby/?x=1", headers={"Host": "localhost"})
    response = connection.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == \
        f"https://localhost:{stack.https_port}/ws/chat/lobby/?x=1"
    (stack.acme / ".well-known" / "acme-challenge").mkdir(parents=True)
    (stack.acme / ".well-known" / "acme-challenge" / "token123").write_text("proof")
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=5)
    connection.request("GET", "/.well-known/acme-challenge/token123",
                       headers={"Host": "localhost"})
    assert connection.getresponse().read() == b"proof"


async def test_websocket_access_log_has_no_query_string(stack, make_user):
    user = await database_sync_to_async(make_user)("alice")
    ticket = (await database_sync_to_async(tickets.issue)(user))[0]
    url = f"wss://localhost:{stack.https_port}/ws/chat/lobby/?ticket={ticket}"
    socket = await LiveSocket.open(url, ssl=stack.ssl, host="127.0.0.1")
    await socket.close()
    time.sleep(0.2)
    log = (stack.logs / "wsops-ws.log").read_text()
    assert "/ws/chat/lobby/" in log
    assert ticket not in log and "ticket=" not in log


def https_headers(stack) -> http.client.HTTPResponse:
    connection = http.client.HTTPSConnection("127.0.0.1", stack.https_port, timeout=5,
                                             context=stack.ssl)
    connection.request("GET", "/accounts/login/", headers={"Host": "localhost"})
    return connection.getresponse()


async def test_https_serves_django_with_hsts_and_no_version(stack):
    response = https_headers(stack)
    assert response.status == 200
    assert response.getheader("Strict-Transport-Security").startswith("max-age=63072000")
    assert response.getheader("Server") == "nginx"


def sslyze_binary() -> str:
    """sslyze runs from its own virtualenv (it pins another cryptography than certbot)."""
    extra = os.path.dirname(os.environ.get("WSOPS_SSLYZE", ""))
    return require_tool("sslyze", also_in=(extra, str(ROOT / ".venv-sslyze" / "bin")),
                        how="make test creates .venv-sslyze")


@pytest.mark.parametrize("stack", ["intermediate", "modern"], indirect=True)
async def test_tls_is_mozilla_compliant_per_sslyze(stack, request):
    sslyze = sslyze_binary()
    profile = request.node.callspec.params["stack"]
    result = subprocess.run(
        [sslyze, f"--mozilla_config={profile}", "--certinfo_ca_file", str(stack.ca_file),
         f"localhost:{stack.https_port}"], capture_output=True, text=True, timeout=300)
    assert "OK - Compliant" in result.stdout, result.stdout[-3000:]


# --- certbot against a local ACME server --------------------------------------------------


@pytest.fixture
def pebble(tmp_path):
    pebble_bin = require_tool("pebble")
    challtestsrv = require_tool("pebble-challtestsrv")
    leaf, key, ca = mint(["localhost", "127.0.0.1"])
    write_pem(tmp_path / "pebble-cert.pem", leaf, ca)
    write_pem(tmp_path / "pebble-key.pem", key)
    write_pem(tmp_path / "pebble-ca.pem", ca)
    acme_port, dns_port, management = free_port(), free_port(), free_port()
    http_port = free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}", "managementListenAddress":
        f"127.0.0.1:{free_port()}", "certificate": str(tmp_path / "pebble-cert.pem"),
        "privateKey": str(tmp_path / "pebble-key.pem"), "httpPort": http_port,
        "tlsPort": free_port(), "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}
    (tmp_path / "pebble.json").write_text(json.dumps(config))
    dns = subprocess.Popen([challtestsrv, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                            "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
                            "-tlsalpn01", "", "-management", f"127.0.0.1:{management}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([pebble_bin, "-config", str(tmp_path / "pebble.json"),
                               "-dnsserver", f"127.0.0.1:{dns_port}"],
                              env={**os.environ, "PEBBLE_VA_NOSLEEP": "1",
                                   "PEBBLE_WFE_NONCEREJECT": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(acme_port, process=server)
    yield type("Pebble", (), {"url": f"https://127.0.0.1:{acme_port}/dir", "http_port": http_port,
                              "ca": tmp_path / "pebble-ca.pem"})
    for process in (server, dns):
        process.terminate()
        process.wait(10)


async def test_certbot_issues_through_the_rendered_nginx_and_the_hook_reloads(
        pebble, tmp_path, daphne_server):
    require_tool("certbot")
    leaf, key, ca = mint(["app.wsops.test"])  # the certificate before certbot's
    certs = tmp_path / "initial"
    certs.mkdir()
    write_pem(certs / "fullchain.pem", leaf, ca)
    write_pem(certs / "privkey.pem", key)
    socket_path = str(tmp_path / "daphne-1.sock")
    daphne_server(unix_socket=socket_path, extra_args=["--proxy-headers"])
    https_port = free_port()
    live = tmp_path / "letsencrypt" / "live" / "app.wsops.test"
    site = tmp_path / "site.conf"
    (tmp_path / "logs").mkdir()
    common = ["--domain", "app.wsops.test", "--upstream", f"unix:{socket_path}",
              "--http-port", str(pebble.http_port), "--https-port", str(https_port),
              "--log-dir", str(tmp_path / "logs"), "--acme-webroot", str(tmp_path / "acme")]
    render_site(site, *common, "--cert", str(certs / "fullchain.pem"),
                "--key", str(certs / "privkey.pem"))
    server = Nginx(tmp_path, site)
    server.start(https_port)
    try:
        # The hook tests and reloads *this* nginx; the site then points at certbot's files.
        hook = tmp_path / "hooks" / "reload.sh"
        out, err = io.StringIO(), io.StringIO()
        os.environ["REQUESTS_CA_BUNDLE"] = str(pebble.ca)
        try:
            await database_sync_to_async(call_command)(
                "wsdeploy", "certbot", *common, "--run", "--server", pebble.url,
                "--config-dir", str(tmp_path / "letsencrypt"), "--work-dir",
                str(tmp_path / "work"), "--logs-dir", str(tmp_path / "certbot-logs"),
                "--deploy-hook", str(hook), "--nginx-conf", str(server.conf),
                "--reload-command", f"{server.binary} -p {tmp_path} -c {server.conf} -s reload "
                                    f"&& touch {tmp_path}/reloaded",
                stdout=out, stderr=err)
        finally:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        assert (live / "fullchain.pem").exists(), err.getvalue()
        assert (tmp_path / "reloaded").exists(), "the deploy hook reloaded nginx"
        render_site(site, *common, "--cert", str(live / "fullchain.pem"),
                    "--key", str(live / "privkey.pem"))
        reload = subprocess.run([server.binary, "-p", str(tmp_path), "-c", str(server.conf),
                                 "-s", "reload"], capture_output=True, text=True)
        assert reload.returncode == 0, reload.stderr
        time.sleep(0.5)
        served = ssl.get_server_certificate(("127.0.0.1", https_port))
        issued = (live / "cert.pem").read_text()
        # nginx now serves the leaf certbot obtained
        assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(issued)
    finally:
        server.stop()
