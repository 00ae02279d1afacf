"""The rendered Apache site and Caddyfile, served for real on loopback with TLS in front of
two daphne workers, as tests/test_e2e_nginx.py does for nginx: the client address, the
redirect and the ACME path, query-free logs, sslyze's Mozilla profiles, a real browser's
cross-site attempt; certbot through Apache, and Caddy getting its own certificate, both
from a local ACME server (pebble)."""

from __future__ import annotations

import http.client
import io
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from tests.frontends import (
    assert_real_client_address,
    assert_redirects_and_serves_acme,
    certbot_stage,
    sslyze_binary,
    wait_for,
    write_pem,
)
from tests.helpers import evil_page, free_port, require_tool, wait_for_port
from wsops import tickets, tokens
from wsops.deploy import apache, caddy
from wsops.deploy.certs import mint
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Apache:
    """apache2 in the foreground, from a throwaway ServerRoot holding ``site``."""

    log_names = ("wsops-ws.log", "wsops-access.log", "wsops-http.log", "wsops-error.log")

    def __init__(self, root: Path, site: Path):
        self.binary = require_tool("apache2")
        # Apache refuses to serve as root: its children then run as nobody.
        run_as = ("nobody", "nogroup") if os.geteuid() == 0 else None
        self.conf = root / "apache2.conf"
        self.conf.write_text(apache.trial_conf(root, site, run_as=run_as))
        self.root = root
        self.process: subprocess.Popen | None = None

    def start(self, port: int) -> None:
        self.log = self.root / "apache-stderr.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([self.binary, "-f", str(self.conf), "-DFOREGROUND"],
                                            stdout=out, stderr=subprocess.STDOUT)
        _wait_for_front(port, self.process, self.log, self.root / "error.log")

    def reload(self) -> None:
        subprocess.run([self.binary, "-f", str(self.conf), "-k", "graceful"], check=True,
                       capture_output=True)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class Caddy:
    """caddy run on ``site`` (a Caddyfile), its storage in a throwaway HOME."""

    log_names = ("wsops-access.log",)

    def __init__(self, root: Path, site: Path, env: dict[str, str] | None = None):
        self.binary = require_tool("caddy")
        self.site = site
        self.env = {**caddy.isolated_env(root / "caddy-home"), **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log = root / "caddy.log"

    def start(self, port: int) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [self.binary, "run", "--config", str(self.site), "--adapter", "caddyfile"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env)
        _wait_for_front(port, self.process, self.log)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


SERVERS = {"apache": Apache, "caddy": Caddy}


def _wait_for_front(port: int, process: subprocess.Popen, *logs: Path) -> None:
    try:
        wait_for_port(port, timeout=60, process=process)
    except RuntimeError as error:
        output = "".join(log.read_text(errors="replace") for log in logs if log.exists())
        raise RuntimeError(f"{error}\n{output[-4000:]}") from None


def render(server: str, path: Path, *args: str) -> None:
    call_command("wsdeploy", server, "--output", str(path), "--force", *args,
                 stdout=io.StringIO(), stderr=io.StringIO())


@pytest.fixture
def world_readable_dir():
    """A directory Apache's children (nobody, when the tests run as root) can traverse:
    pytest's tmp_path is private to its owner."""
    path = Path(tempfile.mkdtemp(prefix="wsops-front-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve_front(world_readable_dir, daphne_server):
    """Factory: the rendered Apache site or Caddyfile on two high ports, TLS from a
    throwaway CA, in front of two daphne workers on unix sockets."""
    started = []

    def serve(server: str, *args: str, profile: str = "intermediate",
              wsops: dict | None = None):
        root = world_readable_dir
        leaf, key, ca = mint(["localhost", "127.0.0.1"])
        certs = root / "certs"
        certs.mkdir()
        fullchain = write_pem(certs / "fullchain.pem", leaf, ca)
        privkey = write_pem(certs / "privkey.pem", key)
        ca_file = write_pem(certs / "ca.pem", ca)
        sockets = [str(root / f"daphne-{n}.sock") for n in (1, 2)]
        workers = [daphne_server(unix_socket=s, extra_args=["--proxy-headers"], wsops=wsops)
                   for s in sockets]
        http_port, https_port = free_port(), free_port()
        (root / "logs").mkdir()
        (root / "acme").mkdir()
        site = root / ("Caddyfile" if server == "caddy" else "site.conf")
        render(server, site, "--domain", "localhost", "--upstream", f"unix:{sockets[0]}",
               "--upstream", f"unix:{sockets[1]}", "--http-port", str(http_port),
               "--https-port", str(https_port), "--log-dir", str(root / "logs"),
               "--cert", str(fullchain), "--key", str(privkey),
               "--acme-webroot", str(root / "acme"), "--tls-profile", profile,
               *(["--caddy-admin", "off"] if server == "caddy" else []), *args)
        front = SERVERS[server](root, site)
        front.start(https_port)
        started.append(front)
        context = ssl.create_default_context(cafile=str(ca_file))
        return type("Stack", (), {"http_port": http_port, "https_port": https_port,
                                  "ssl": context, "ca_file": ca_file, "logs": root / "logs",
                                  "workers": workers, "acme": root / "acme", "front": front,
                                  "root": root})

    yield serve
    for front in started:
        front.stop()


@pytest.fixture(params=["apache", "caddy"])
def stack(request, serve_front):
    return serve_front(request.param)


async def test_wss_through_the_front_end_sees_the_real_client_address(stack, make_user):
    await assert_real_client_address(stack, make_user)


async def test_plain_http_redirects_and_serves_only_acme(stack):
    assert_redirects_and_serves_acme(stack)


def https_get(stack, path: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPSConnection("127.0.0.1", stack.https_port, timeout=10,
                                             context=stack.ssl)
    connection.request("GET", path, headers={"Host": "localhost"})
    response = connection.getresponse()
    response.read()
    return response


async def test_https_serves_django_with_hsts_and_no_version(stack):
    response = https_get(stack, "/accounts/login/")
    assert response.status == 200
    assert response.getheader("Strict-Transport-Security").startswith("max-age=63072000")
    assert response.getheader("Server") in (None, "Apache")  # Caddy's header is removed


async def test_websocket_access_log_has_no_query_string(stack, make_user):
    user = await database_sync_to_async(make_user)("alice")
    secret = (await database_sync_to_async(tokens.issue)(user))[1]
    ticket = (await database_sync_to_async(tickets.issue)(user))[0]
    url = f"wss://localhost:{stack.https_port}/ws/chat/lobby/?ticket={ticket}"
    with_ticket = await LiveSocket.open(url, ssl=stack.ssl, host="127.0.0.1")
    await with_ticket.close()
    # a token in the subprotocol header, and a plain request with a query string
    with_token = await LiveSocket.open(url.split("?")[0] + "?marker=1", token=secret,
                                       ssl=stack.ssl, host="127.0.0.1")
    assert with_token.accepted
    await with_token.close()
    assert https_get(stack, "/accounts/login/?next=/after/").status == 200

    def logs() -> str:
        return "".join((stack.logs / name).read_text() for name in stack.front.log_names
                       if (stack.logs / name).exists())

    # Apache writes the log line when the tunnel closes, Caddy when the handler returns
    wait_for(lambda: logs().count("/ws/chat/lobby/") >= 2 and "/accounts/login/" in logs(),
             message=f"both sockets and the page logged: {logs()}")
    text = logs()
    assert ticket not in text and "ticket=" not in text and "marker=" not in text, text
    assert secret not in text and secret.split("_")[-1] not in text, text


@pytest.mark.parametrize("server", ["apache", "caddy"])
@pytest.mark.parametrize("profile", ["intermediate", "modern"])
async def test_tls_is_mozilla_compliant_per_sslyze(serve_front, server, profile):
    sslyze = sslyze_binary()
    stack = serve_front(server, profile=profile)
    result = subprocess.run(
        [sslyze, f"--mozilla_config={profile}", "--certinfo_ca_file", str(stack.ca_file),
         f"localhost:{stack.https_port}"], capture_output=True, text=True, timeout=300)
    assert "OK - Compliant" in result.stdout, result.stdout[-3000:]





@pytest.mark.parametrize("server", ["apache", "caddy"])
async def test_chromium_cross_site_page_is_refused_through_the_front_end(
        serve_front, server, evil_site, chromium):
    executable, async_playwright = chromium
    stack = serve_front(server, wsops={"ALLOWED_ORIGINS": ["https://localhost"]})
    pages, evil_origin = evil_site
    pages["/evil.html"] = evil_page(f"wss://localhost:{stack.https_port}/ws/chat/lobby/")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"])
        context = await browser.new_context(ignore_https_errors=True)  # throwaway CA
        attacker = await context.new_page()
        await attacker.goto(f"{evil_origin}/evil.html")
        assert await attacker.evaluate("window.result") == "refused"
        await browser.close()
    # the handshake went through the front end and daphne refused the origin
    logs = "".join(worker.output() for worker in stack.workers)
    assert "origin refused: origin_not_allowed" in logs, logs[-3000:]


# --- certificates from a local ACME server ------------------------------------------------


async def test_certbot_issues_through_the_rendered_apache_and_the_hook_reloads(
        pebble, world_readable_dir, daphne_server):
    require_tool("certbot")
    root = world_readable_dir
    stage = certbot_stage(root, pebble, daphne_server)
    common, live, https_port = stage.common, stage.live, stage.https_port
    site = root / "site.conf"
    render("apache", site, *common, *stage.initial)
    server = Apache(root, site)
    server.start(https_port)
    try:
        hook = root / "hooks" / "reload.sh"
        err = io.StringIO()
        os.environ["REQUESTS_CA_BUNDLE"] = str(pebble.ca)
        try:
            await database_sync_to_async(call_command)(
                "wsdeploy", "certbot", *common, "--web-server", "apache", "--run",
                "--server", pebble.url, "--config-dir", str(root / "letsencrypt"),
                "--work-dir", str(root / "work"), "--logs-dir", str(root / "certbot-logs"),
                "--deploy-hook", str(hook), "--apache-conf", str(server.conf),
                "--reload-command", f"{server.binary} -f {server.conf} -k graceful "
                                    f"&& touch {root}/reloaded",
                stdout=io.StringIO(), stderr=err)
        finally:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        assert (live / "fullchain.pem").exists(), err.getvalue()
        assert (root / "reloaded").exists(), "the deploy hook reloaded Apache"
        assert "-t -f" in hook.read_text()  # it tested this configuration first
        render("apache", site, *common, "--cert", str(live / "fullchain.pem"),
               "--key", str(live / "privkey.pem"))
        server.reload()
        issued = ssl.PEM_cert_to_DER_cert((live / "cert.pem").read_text())
        # Apache now serves the leaf certbot obtained (a graceful restart takes a moment)
        wait_for(lambda: ssl.PEM_cert_to_DER_cert(
            ssl.get_server_certificate(("127.0.0.1", https_port))) == issued,
            message="Apache serves certbot's certificate")
    finally:
        server.stop()


async def test_caddy_gets_its_own_certificate_from_pebble(pebble, tmp_path, daphne_server):
    socket_path = str(tmp_path / "daphne-1.sock")
    daphne_server(unix_socket=socket_path, extra_args=["--proxy-headers"])
    https_port = pebble.tls_port  # pebble checks TLS-ALPN-01 there, HTTP-01 on http_port
    site = tmp_path / "Caddyfile"
    (tmp_path / "logs").mkdir()
    render("caddy", site, "--domain", "app.wsops.test", "--upstream", f"unix:{socket_path}",
           "--http-port", str(pebble.http_port), "--https-port", str(https_port),
           "--log-dir", str(tmp_path / "logs"), "--acme-ca", pebble.url,
           "--caddy-admin", "off", "--email", "ops@wsops.test")
    # Go reads extra roots from SSL_CERT_FILE: pebble's own TLS certificate is trusted
    server = Caddy(tmp_path, site, env={"SSL_CERT_FILE": str(pebble.ca)})
    server.start(pebble.http_port)
    try:
        log = server.log
        wait_for(lambda: "Pebble" in _issuer(served_certificate(https_port, "app.wsops.test")),
                 timeout=120, message="Caddy serves a certificate from pebble (see caddy.log)")
        assert "certificate obtained successfully" in log.read_text()
        # and proxies to daphne with it: Django answers (this Host is not in ALLOWED_HOSTS)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # pebble's root
        connection = http.client.HTTPSConnection("app.wsops.test", https_port, timeout=10,
                                                 context=context)
        connection.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", https_port), timeout=10),
            server_hostname="app.wsops.test")
        connection.request("GET", "/accounts/login/")
        response = connection.getresponse()
        assert response.status == 400 and b"Bad Request" in response.read()
    finally:
        server.stop()


def served_certificate(port: int, server_name: str) -> str:
    """The leaf served on 127.0.0.1:``port`` for ``server_name`` (SNI), PEM; "" if none."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=server_name) as tls:
            return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))
    except (OSError, ssl.SSLError):
        return ""


def _issuer(pem: str) -> str:
    if not pem:
        return ""
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).issuer.rfc4514_string()


async def test_a_worker_down_leaves_no_ticket_in_any_log(stack):
    """The front end's own error log records a request daphne never answered: with the
    query string (and a ticket) for nginx (see DEPLOY.md); not for the Apache site or the
    Caddyfile."""
    for worker in stack.workers:
        worker.stop()
    secret = "wst_tkt_" + "s3cr3t" * 4
    url = f"wss://localhost:{stack.https_port}/ws/chat/lobby/?ticket={secret}"
    refused = await LiveSocket.open(url, ssl=stack.ssl, host="127.0.0.1")
    assert refused.status in (502, 503)
    files = [stack.root / "error.log", stack.root / "caddy.log",
             *(stack.logs / name for name in stack.front.log_names)]

    def text() -> str:
        return "".join(f.read_text(errors="replace") for f in files if f.exists())

    wait_for(lambda: text().count("/ws/chat/lobby/") >= 1, message="the refusal logged")
    assert secret not in text(), text()[-4000:]
