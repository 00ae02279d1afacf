"""The rendered nginx, served for real on loopback with TLS in front of two daphne workers;
its TLS checked by sslyze; certbot issuing through it from a local ACME server (pebble)."""

import http.client
import io
import os
import ssl
import subprocess
import time

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from tests.frontends import (
    assert_real_client_address,
    assert_redirects_and_serves_acme,
    certbot_stage,
    sslyze_binary,
)
from tests.helpers import (
    Nginx,
    render_site,
    require_tool,
    wait_for,
)
from wsops import tickets, tokens
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(request, serve_site):
    return serve_site(profile=getattr(request, "param", "intermediate"))


async def test_wss_through_nginx_sees_the_real_client_address(stack, make_user):
    await assert_real_client_address(stack, make_user)


async def test_plain_http_redirects_and_serves_only_acme(stack):
    assert_redirects_and_serves_acme(stack)


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


@pytest.mark.parametrize("stack", ["intermediate", "modern"], indirect=True)
async def test_tls_is_mozilla_compliant_per_sslyze(stack, request):
    sslyze = sslyze_binary()
    profile = request.node.callspec.params["stack"]
    result = subprocess.run(
        [sslyze, f"--mozilla_config={profile}", "--certinfo_ca_file", str(stack.ca_file),
         f"localhost:{stack.https_port}"], capture_output=True, text=True, timeout=300)
    assert "OK - Compliant" in result.stdout, result.stdout[-3000:]


# --- certbot against a local ACME server --------------------------------------------------


async def test_certbot_issues_through_the_rendered_nginx_and_the_hook_reloads(
        pebble, tmp_path, daphne_server):
    require_tool("certbot")
    stage = certbot_stage(tmp_path, pebble, daphne_server)
    common, live, https_port = stage.common, stage.live, stage.https_port
    site = tmp_path / "site.conf"
    render_site(site, *common, *stage.initial)
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
