"""``wssecure probe`` against real servers, and the advisory table of ``wssecure check``.

- The example project behind the nginx ``wsdeploy`` renders (TLS from a throwaway CA,
  trusted through ``SSL_CERT_FILE``) probes clean at ERROR.
- A bare Channels app (``tests/bareproject``: ``AllowedHostsOriginValidator`` with
  ``ALLOWED_HOSTS = ["*"]``, daphne's defaults) has the hijacking, authentication,
  throttling and frame-size findings, exit 1.
- A host outside ``ALLOWED_HOSTS`` exits 2 and the server sees no connection.
- The budget holds: daphne's access log counts the handshakes the server saw, the echo
  consumer prints every frame it received; nginx logs every request the probe counted.
- Transport and client-side details on other real servers: openssl s_server (TLS 1.0,
  an unknown CA, no HSTS) and the websockets library's own server (permessage-deflate,
  a versioned Server header, a redirect to another host that must not be followed).
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.helpers import ROOT, free_port, require_tool, wait_for, wait_for_port, write_pem
from wsops import tokens
from wsops.audit import advisories
from wsops.audit.probing import USER_AGENT
from wsops.deploy.certs import mint

BARE = ROOT / "tests" / "bareproject"


def wssecure(*args: str) -> tuple[int, str]:
    """(exit status, stdout or the usage error) of ``wssecure``, as the command line sees."""
    out = io.StringIO()
    try:
        call_command("wssecure", *args, stdout=out, stderr=io.StringIO())
    except SystemExit as done:
        return int(done.code), out.getvalue()
    except CommandError as error:
        return error.returncode, str(error)
    return 0, out.getvalue()


def probe(*args: str) -> tuple[int, str]:
    return wssecure("probe", *args)


def wssecure_check(*args: str) -> tuple[int, str]:
    return wssecure("check", *args)


def ids(report: str) -> set[str]:
    return {finding["id"] for finding in json.loads(report)["findings"]}


def finding(report: str, id: str) -> dict:
    return next(f for f in json.loads(report)["findings"] if f["id"] == id)


@pytest.fixture
def bare_app(daphne_server, tmp_path):
    """The bare Channels app under daphne's defaults, with an access log to count from."""
    log = tmp_path / "access.log"
    server = daphne_server(project=BARE, settings_module="bare_settings",
                           application="bare_asgi:application",
                           extra_args=["--access-log", str(log)])
    server.access_log = log
    server.handshakes = lambda: log.read_text().count('"WSCONNECTING ') if log.exists() else 0
    server.frames_received = lambda: server.output().count("RECEIVED ")
    return server


# --- the example project behind the rendered nginx --------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_example_behind_rendered_nginx_probes_clean_at_error(serve_site, make_user,
                                                             monkeypatch):
    stack = serve_site()
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.ca_file))  # the throwaway CA, as a user would
    secret = tokens.issue(make_user("alice"))[1]
    url = f"wss://localhost:{stack.https_port}/ws/chat/lobby/"
    echo = '{"action": "echo", "text": "hi"}'  # a frame the chat accepts: only a rate stops it
    status, report = probe(url, "--token", secret, "--http-port", str(stack.http_port),
                           "--message", echo, "--json")
    assert status == 0, report
    data = json.loads(report)
    assert data["summary"]["errors"] == 0, report
    found = ids(report)
    # each probe ran and passed rather than being skipped
    assert {"wsops.P001", "wsops.P002", "wsops.P003", "wsops.P010", "wsops.P011",
            "wsops.P012", "wsops.P013", "wsops.P014", "wsops.P020", "wsops.P021",
            "wsops.P040", "wsops.P041", "wsops.P042", "wsops.P044", "wsops.P045",
            "wsops.P046"}.isdisjoint(found), report
    not_run = finding(report, "wsops.P090")["message"]
    assert "message burst" not in not_run and "handshake burst" not in not_run
    assert "TLS 1.2, TLS 1.3" in finding(report, "wsops.P048")["message"]
    assert finding(report, "wsops.P023")["message"].startswith(
        "The largest frame accepted is 64 KiB; 256 KiB was closed with 1009")
    refused = {r["probe"]: r["outcome"] for r in data["refusals"]}
    assert refused["Origin https://evil.test"] == "HTTP 403 before accept"
    assert refused["no credential"] == "HTTP 403 before accept"
    assert data["budget"]["connections"] <= 30 and data["budget"]["messages"] <= 200
    # nginx logged one request per handshake and HTTP request the probe counted; the other
    # connections are the five TLS handshakes (certificate, four versions) without a request
    logs = [*stack.logs.iterdir(), stack.prefix / "access.log"]  # the site's, and port 80's
    logged = lambda: sum(p.read_text().count(USER_AGENT) for p in logs if p.exists())  # noqa: E731
    wait_for(lambda: logged() >= data["budget"]["connections"] - 5, message="nginx logs")
    assert logged() == data["budget"]["connections"] - 5
    # with --fail-level WARNING the same endpoint fails only if warnings remain
    warnings = data["summary"]["warnings"]
    status, _ = probe(url, "--token", secret, "--http-port", str(stack.http_port),
                      "--fail-level", "WARNING", "--json")
    assert status == (1 if warnings else 0)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_accept_then_close_refusals_are_refusals_reported_per_probe(daphne_server, make_user,
                                                                    monkeypatch):
    """REJECT_WITH="close_code": every refusal is a 101 and then a close; none of them may
    be mistaken for an accepted socket, and the report tells clients which code means what."""
    server = daphne_server(wsops={"REJECT_WITH": "close_code"})
    secret = tokens.issue(make_user("alice"))[1]
    monkeypatch.setattr(sys, "stdin", io.StringIO(secret + "\n"))  # out of ps' sight
    status, report = probe(server.url(), "--token", "-", "--json")
    assert status == 0, report
    assert not {"wsops.P001", "wsops.P002", "wsops.P003", "wsops.P010", "wsops.P011",
                "wsops.P012", "wsops.P014"} & ids(report), report
    refused = {r["probe"]: r["outcome"] for r in json.loads(report)["refusals"]}
    assert refused["no credential"] == "accepted, then closed with 4401"
    assert refused["an invalid token"] == "accepted, then closed with 4401"
    assert refused["Origin https://evil.test"] == "accepted, then closed with 4403"
    assert "accepted, then closed with 4401: no credential, an invalid token" in finding(
        report, "wsops.P050")["message"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_burst_closed_for_invalid_input_is_not_taken_for_a_throttle(daphne_server,
                                                                     make_user):
    server = daphne_server(wsops={"RATES": {"connect": "1000/m", "message": "1000/s"}})
    secret = tokens.issue(make_user("alice"))[1]
    status, report = probe(server.url(), "--token", secret, "--json")  # unknown actions
    assert status == 0 and "wsops.P031" not in ids(report)
    assert "message burst (the socket was closed with 4400, for invalid input" in finding(
        report, "wsops.P090")["message"]
    status, report = probe(server.url(), "--token", secret, "--json",
                           "--message", '{"action": "echo", "text": "hi"}')
    assert status == 0 and "wsops.P031" in ids(report)  # 100 valid frames under 1000/s
    status, report = probe(server.url(), "--token", secret, "--json",
                           "--message", "x" * 70000)  # above MAX_MESSAGE_BYTES: 1009
    assert status == 0 and "wsops.P031" not in ids(report) and "closed with 1009" in report


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_session_cookie_probes_run_with_cookie(daphne_server, make_user):
    from django.test import Client

    server = daphne_server()
    client = Client()
    client.force_login(make_user("alice"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    status, report = probe(server.url(), "--cookie", cookie, "--json")
    assert status == 0, report
    refused = {r["probe"]: r["outcome"] for r in json.loads(report)["refusals"]}
    assert refused["cookie without Origin"] == "HTTP 403 before accept"  # no P004
    assert refused["Origin https://evil.test"] == "HTTP 403 before accept"  # with the cookie
    assert "with the given credential" not in refused
    assert json.loads(report)["target"]["credential"] == "cookie"


@pytest.fixture
def ws_server(tmp_path):
    """Factory: ``tests/ws_server.py`` on a free port (echo, or ``redirect=URL``)."""
    started = []

    def start(*args: str) -> str:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "tests.ws_server", str(port), *args],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        wait_for_port(port, process=process)
        return f"ws://127.0.0.1:{port}/"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


@pytest.mark.e2e
def test_compression_and_a_versioned_server_header_are_found(ws_server):
    status, report = probe(ws_server(), "--json")
    assert status == 1
    assert {"wsops.P046", "wsops.P047", "wsops.P021"} <= ids(report)
    assert "websockets/" in finding(report, "wsops.P046")["message"]


@pytest.mark.e2e
def test_a_redirect_to_another_host_is_not_followed(ws_server):
    """Every handshake is answered 301 to 127.0.0.2: the probe reports the refusals, and
    the other host's listening socket has no connection in its backlog."""
    with socket.create_server(("127.0.0.2", 0)) as elsewhere:
        elsewhere.setblocking(False)
        other = f"ws://127.0.0.2:{elsewhere.getsockname()[1]}/"
        status, report = probe(ws_server("--redirect", other), "--json")
        seen = 0
        while True:
            try:
                elsewhere.accept()[0].close()
            except BlockingIOError:
                break
            seen += 1
    assert status == 0 and seen == 0
    data = json.loads(report)
    assert data["refusals"] and {r["outcome"] for r in data["refusals"]} == {
        "HTTP 301 before accept"}
    assert len(data["refusals"]) == data["budget"]["connections"]


@pytest.mark.e2e
def test_old_tls_an_unverifiable_chain_and_no_hsts_are_found(tmp_path):
    """openssl s_server with every protocol version on, serving a leaf of an unknown CA."""
    openssl = require_tool("openssl")
    leaf, key, _ = mint(["localhost", "127.0.0.1"])
    port = free_port()
    server = subprocess.Popen(
        [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-www", "-cipher",
         "ALL:@SECLEVEL=0", "-cert", str(write_pem(tmp_path / "cert.pem", leaf)),
         "-key", str(write_pem(tmp_path / "key.pem", key))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process=server)
        status, report = probe(f"wss://localhost:{port}/ws/", "--json",
                               "--http-port", str(free_port()))
    finally:
        server.terminate()
        server.wait(10)
    tls = finding(report, "wsops.P048")["message"]
    if "not tried" in tls:
        pytest.skip(reason=f"old TLS versions unavailable in this machine's OpenSSL: {tls}")
    assert status == 1
    assert {"wsops.P041", "wsops.P042", "wsops.P044"} <= ids(report), report
    assert "TLS 1.0, TLS 1.1, TLS 1.2, TLS 1.3" in tls
    assert "unable to get local issuer certificate" in finding(report, "wsops.P042")["message"]
    assert "nothing answers on port" in finding(report, "wsops.P090")["message"]


# --- a bare Channels app -------------------------------------------------------------------


@pytest.mark.e2e
def test_bare_channels_app_has_the_findings_and_exits_1(bare_app):
    status, report = probe(bare_app.url("/ws/echo/"), "--json")
    assert status == 1, report
    found = ids(report)
    assert {"wsops.P001", "wsops.P002", "wsops.P003"} <= found  # hijacking
    assert "wsops.P010" in found  # authentication: anonymous sockets accepted
    assert {"wsops.P030", "wsops.P031"} <= found  # throttling
    assert "wsops.P021" in found  # daphne's default: 1 MiB frames accepted
    assert finding(report, "wsops.P023")["message"].startswith(
        "The largest frame accepted is 1 MiB; 2 MiB was ")
    assert "wsops.P040" not in found  # ws:// on loopback is not a finding


@pytest.mark.e2e
def test_a_suffix_match_origin_check_is_caught_by_the_look_alikes(bare_app):
    status, report = probe(bare_app.url("/ws/naive/"), "--json")
    assert status == 1
    assert "wsops.P001" not in ids(report) and "wsops.P002" not in ids(report)
    message = finding(report, "wsops.P003")["message"]
    assert message.startswith("Look-alike origins are accepted (https://evilapp.example.com):"
                              " the origin check matches by prefix or suffix")


@pytest.mark.e2e
def test_text_report_lists_findings_with_hints(bare_app):
    status, report = probe(bare_app.url("/ws/echo/"))
    assert status == 1
    lines = report.splitlines()
    assert lines[0] == f"Probed {bare_app.url('/ws/echo/')}"
    assert "  wsops.P001: A socket from a foreign page" in report
    assert "      HINT: " in report
    assert lines[-1].startswith("wssecure: 3 error(s)")


# --- politeness: the one host, the budget ----------------------------------------------------


@pytest.mark.e2e
def test_host_outside_allowed_hosts_exits_2_before_any_connection(bare_app, settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    status, message = probe(bare_app.url("/ws/echo/"))
    assert status == 2
    assert "127.0.0.1 is not in ALLOWED_HOSTS" in message and "--allow-any-host" in message
    assert bare_app.handshakes() == 0
    # the access log does count handshakes: the same probe, allowed, shows up in it
    status, _ = probe(bare_app.url("/ws/echo/"), "--allow-any-host", "--max-connections", "4")
    assert status == 1  # the foreign origin is accepted (4th connection)
    assert bare_app.handshakes() == 4


@pytest.mark.e2e
@pytest.mark.parametrize(("connections", "messages"), [(7, 12), (25, 40)])
def test_probe_stays_within_its_budget(bare_app, connections, messages):
    status, report = probe(bare_app.url("/ws/echo/"), "--json", "--max-connections",
                           str(connections), "--max-messages", str(messages))
    assert status == 1  # the hijacking probes come early enough for any budget
    data = json.loads(report)
    used = data["budget"]
    # what the server saw is what the probe counted, and both stay within the limits
    assert bare_app.handshakes() == used["connections"] <= connections
    assert bare_app.frames_received() <= used["messages"] <= messages
    assert "spent" in finding(report, "wsops.P090")["message"]


# --- usage errors: exit 2, one line, no connection -----------------------------------------


@pytest.mark.parametrize(("args", "error"), [
    (["http://127.0.0.1/ws/"], "URL must be ws://HOST/... or wss://HOST/..."),
    (["ws:///ws/"], "URL must be ws://HOST/..."),
    (["ws://127.0.0.1:99999/ws/"], "invalid port"),
    (["ws://127.0.0.1/ws/", "--cookie", "sessionid"], "--cookie must be NAME=VALUE"),
    (["ws://127.0.0.1/ws/", "--cookie", "a b=c"], "--cookie must be NAME=VALUE"),
    (["ws://127.0.0.1/ws/", "--origin", "app.example.com"], "is not an origin"),
    (["ws://127.0.0.1/ws/", "--max-connections", "0"], "--max-connections must be at least 1"),
    (["ws://127.0.0.1/ws/", "--timeout", "0"], "--timeout must be positive"),
    (["ws://127.0.0.1/ws/", "--token", "t", "--cookie", "a=b"], "not allowed with argument"),
])
def test_usage_errors_exit_2(args, error):
    status, message = probe(*args)
    assert status == 2 and error in message, message


def test_unreachable_endpoint_exits_2():
    status, message = probe(f"ws://127.0.0.1:{free_port()}/ws/")
    assert status == 2
    assert message.startswith("cannot probe ws://127.0.0.1:")


def test_without_websockets_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "websockets", None)
    status, message = probe("ws://127.0.0.1/ws/")
    assert status == 2 and 'pip install "wsops[probe]"' in message


# --- the advisory table (wssecure check, wsops.E010) ----------------------------------------


def test_shipped_table_is_valid_and_names_the_issues_advisories():
    table = {a.id: a for a in advisories.load()}
    assert {"CVE-2026-44545", "CVE-2026-44546", "CVE-2020-35681", "CVE-2020-35678",
            "CVE-2021-33880", "CVE-2023-28858", "CVE-2022-24801"} <= set(table)
    assert all(a.source and a.summary for a in table.values())


@pytest.mark.parametrize(("advisory", "version", "affected"), [
    ("CVE-2026-44545", "4.2.1", True), ("CVE-2026-44545", "4.2.2", False),
    ("CVE-2020-35681", "2.4.0", False), ("CVE-2020-35681", "3.0.0", True),
    ("CVE-2020-35681", "3.0.2", True), ("CVE-2020-35681", "3.0.3", False),
    ("CVE-2020-35678", "20.12.2", True), ("CVE-2020-35678", "20.12.3", False),
    ("CVE-2021-33880", "9.0.2", True), ("CVE-2021-33880", "9.1", False),
    ("CVE-2023-28858", "4.1.4", False), ("CVE-2023-28858", "4.3.5", True),
    ("CVE-2023-28858", "4.3.6", False), ("CVE-2023-28858", "4.4.2", True),
    ("CVE-2023-28858", "4.5.3", False), ("CVE-2023-28859", "4.5.3", True),
    ("CVE-2023-28859", "4.5.4", False), ("CVE-2023-28859", "5.0.0", False),
    ("CVE-2022-24801", "22.2.0", True), ("CVE-2022-24801", "22.4.0rc1", False),
    ("CVE-2022-24801", "22.4.0", False), ("CVE-2022-24801", "not-a-version", False),
])
def test_advisory_ranges(advisory, version, affected):
    table = {a.id: a for a in advisories.load()}
    assert table[advisory].affects(version) is affected


def write_table(path: Path, **entry) -> Path:
    base = {"id": "TEST-1", "package": "daphne", "affected": [">=0,<99999"],
            "fixed": ["99999"], "level": "error", "summary": "a test advisory",
            "source": "tests"}
    path.write_text(json.dumps({"advisories": [{**base, **entry}]}))
    return path


def test_check_flags_an_installed_version_in_a_range(tmp_path):
    installed = advisories.installed_version("daphne")
    status, report = wssecure_check("--json", "--advisories", str(write_table(
        tmp_path / "t.json")))
    assert status == 1
    found = [f for f in json.loads(report)["findings"] if f["id"] == "wsops.E010"]
    assert found and found[0]["message"] == (
        f"daphne {installed} is affected by TEST-1: a test advisory.")
    assert "Upgrade daphne to 99999" in found[0]["hint"]
    # a warning-level entry is W016, below the default fail level
    status, report = wssecure_check("--json", "--advisories", str(write_table(
        tmp_path / "w.json", level="warning")))
    assert "wsops.W016" in ids(report) and "wsops.E010" not in ids(report)
    # a range that does not hold the installed version says nothing
    status, report = wssecure_check("--json", "--advisories", str(write_table(
        tmp_path / "n.json", affected=["<0.1"], fixed=["0.1"])))
    assert not {"wsops.E010", "wsops.W016"} & ids(report)


@pytest.mark.parametrize(("entry", "error"), [
    ({"affected": ["<=4.2.2"], "fixed": ["4.2.2"]}, "a fixed version lies in an affected range"),
    ({"affected": ["about 4"]}, "Invalid specifier"),
    ({"level": "critical"}, "level must be one of"),
    ({"extra": 1}, "needs exactly the fields"),
])
def test_a_malformed_table_is_a_usage_error(tmp_path, entry, error):
    status, message = wssecure_check("--advisories", str(write_table(tmp_path / "t.json",
                                                                     **entry)))
    assert status == 2 and error in message, message


def test_an_unreadable_table_is_a_usage_error(tmp_path):
    status, message = wssecure_check("--advisories", str(tmp_path / "missing.json"))
    assert status == 2 and "cannot read the advisory table" in message
