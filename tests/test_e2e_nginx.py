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

from tests.helpers import ROOT, free_port, require_tool, wait_for_port
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
def serve_site(tmp_path, daphne_server, settings):
    """Factory: the rendered site on two high ports, TLS from a throwaway CA, in front of two
    daphne workers on unix sockets. ``wsops`` overrides settings the site is rendered from;
    ``http_extra`` goes into the http block before the site (e.g. realip for a test)."""
    started = []

    def serve(*args: str, profile: str = "intermediate", wsops: dict | None = None,
              http_extra: str = ""):
        if wsops:
            settings.WSOPS = {**settings.WSOPS, **wsops}
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
                    "--acme-webroot", str(tmp_path / "acme"), "--tls-profile", profile, *args)
        if http_extra:
            edge = tmp_path / "edge.conf"
            edge.write_text(f"{http_extra}\ninclude {site};\n")
            site = edge
        server = Nginx(tmp_path, site)
        server.start(https_port)
        started.append(server)
        context = ssl.create_default_context(cafile=str(ca_file))
        return type("Stack", (), {"http_port": http_port, "https_port": https_port,
                                  "ssl": context, "ca_file": ca_file, "logs": tmp_path / "logs",
                                  "workers": workers, "acme": tmp_path / "acme",
                                  "nginx": server, "prefix": tmp_path})

    yield serve
    for server in started:
        server.stop()


@pytest.fixture
def stack(request, serve_site):
    return serve_site(profile=getattr(request, "param", "intermediate"))


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


# --- edge limits: IPv6 prefixes, and no credentials in the logs they write ----------------

# Test-only: nginx takes the client address from X-Forwarded-For when the peer is loopback,
# so one test client can be many IPv6 clients. (The rendered site never trusts the header.)
REAL_IP_FROM_LOOPBACK = "set_real_ip_from 127.0.0.1;\nreal_ip_header X-Forwarded-For;"
ONE_PER_MINUTE = {"RATES": {"connect": "1/m"}}  # limit_req: rate=1r/m burst=1 nodelay


def request_status(stack, path: str, *, client: str | None = None,
                   source: str = "127.0.0.1") -> int:
    """Status of a plain GET through nginx, from a loopback ``source`` or as ``client``."""
    connection = http.client.HTTPSConnection("127.0.0.1", stack.https_port, timeout=10,
                                             context=stack.ssl, source_address=(source, 0))
    headers = {"Host": "localhost"}
    if client:
        headers["X-Forwarded-For"] = client
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def burst(stack, *clients: str) -> list[bool]:
    """For each client in turn, one request: was it refused by nginx's limits (429)?"""
    return [request_status(stack, "/ws/chat/lobby/", client=c) == 429 for c in clients]


@pytest.mark.parametrize(("prefix", "together", "apart"), [
    # three addresses of one /64 share one budget; the next /64 has its own
    ("64", ["2001:db8:1:1::1", "2001:db8:1:1:ffff::2", "2001:db8:1:1:abcd:ef01:2345:6789"],
     "2001:db8:1:2::1"),
    # /60 is not whole bytes: rounded down to /56, so these two /64s are one client
    ("60", ["2001:db8:0:1::1", "2001:db8:0:f1::2", "2001:db8:0:ff:1::3"], "2001:db8:0:100::1"),
])
async def test_limits_key_ipv6_clients_by_prefix(serve_site, prefix, together, apart):
    stack = serve_site("--ipv6-prefix", prefix, wsops=ONE_PER_MINUTE,
                       http_extra=REAL_IP_FROM_LOOPBACK)
    # rate 1r/m with burst 1: two requests pass, the third from the same prefix is refused
    assert burst(stack, *together) == [False, False, True]
    assert burst(stack, apart) == [False]
    # IPv4 clients are keyed by their whole address, as before
    assert burst(stack, "198.51.100.7", "198.51.100.7", "198.51.100.7", "198.51.100.8") == \
        [False, False, True, False]


async def test_limits_with_a_128_prefix_key_each_address(serve_site):
    stack = serve_site("--ipv6-prefix", "128", wsops=ONE_PER_MINUTE,
                       http_extra=REAL_IP_FROM_LOOPBACK)
    assert burst(stack, "2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1::3") == \
        [False, False, False]
    assert burst(stack, "2001:db8:1:1::1", "2001:db8:1:1::1") == [False, True]


def wait_for(predicate, timeout: float = 30, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.1)


def nginx_logs(stack) -> dict[str, str]:
    """Every file the nginx configuration writes: its error log and the site's access logs."""
    return {str(p.relative_to(stack.prefix)): p.read_text(errors="replace")
            for p in [stack.prefix / "error.log", *stack.logs.iterdir()] if p.is_file()}


async def test_rejected_ticket_requests_leave_no_ticket_in_any_log(serve_site, make_user):
    """Issue 12.11: nginx logs a rejected request's whole request line at the limits' log
    level; the rendered site keeps that below the error log's level."""
    stack = serve_site(wsops={**ONE_PER_MINUTE, "MAX_CONNECTIONS_PER_IP": 1})
    user = await database_sync_to_async(make_user)("alice")
    secret = (await database_sync_to_async(tokens.issue)(user))[1]
    ticket = (await database_sync_to_async(tickets.issue)(user))[0]
    path = f"/ws/chat/lobby/?ticket={ticket}"
    url = f"wss://localhost:{stack.https_port}"
    # limit_conn: 127.0.0.3 holds its one connection, its next handshake is refused
    held = await LiveSocket.open(url + "/ws/chat/lobby/", token=secret, ssl=stack.ssl,
                                 local_addr=("127.0.0.3", 0), host="127.0.0.1")
    assert held.accepted
    refused = await LiveSocket.open(url + path, ssl=stack.ssl, local_addr=("127.0.0.3", 0),
                                    host="127.0.0.1")
    assert refused.status == 429
    await held.close()
    # limit_req: the third request from 127.0.0.4 within the minute is refused
    statuses = [request_status(stack, path, source="127.0.0.4") for _ in range(3)]
    assert statuses[2] == 429 and 429 not in statuses[:2]
    ws_log = stack.logs / "wsops-ws.log"
    wait_for(lambda: ws_log.read_text().count('" 429 ') == 2, message="two 429s logged")
    logs = nginx_logs(stack)
    assert {"error.log", "logs/wsops-ws.log"} <= logs.keys()
    for name, text in logs.items():
        assert ticket not in text and "ticket=" not in text, (name, text[-2000:])


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
