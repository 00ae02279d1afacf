"""Fixtures that start the real components: redis-server, daphne (and nginx, in its tests).

- ``redis_server`` (session): ``REDIS_URL`` when set, used only under a key prefix
  unique to this run (deleted at the end); else a private ``redis-server`` on a
  free loopback port without persistence.
- ``private_redis``: always a private redis-server, for tests that kill it.
- ``daphne_server``: a factory that starts real daphne processes for the
  example project (``tests.settings``) and stops them; their logs are printed
  when a test fails.
- ``pebble`` (a local ACME server), ``chromium`` (Playwright on Debian's Chromium)
  and ``evil_site`` (an attacker's page on another origin): the front-end and
  browser tests share them.
- ``serve_site``: a factory that serves the site ``wsdeploy nginx`` renders with a real
  nginx, TLS from a throwaway CA, in front of two such daphne workers.
- Under ``CI=true`` a missing tool fails the run instead of skipping, except the
  tools named in ``WSOPS_TEST_HIDE_TOOLS`` (``.ci/run``'s second pass hides them to
  prove that a machine without them skips their tests).
- Fresh clock: ``time.monotonic()`` reads about 1 s at the start of the run, in this
  process and in every daphne the fixture starts (``tests/fresh_clock.py``), as on
  a host booted a second ago (``WSOPS_TEST_CLOCK_AT=real`` keeps the host's clock,
  ``=100000`` plays a host up for a day). The ``fresh_clock`` fixture shifts it to
  read 1 s again for one test.
"""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests import fresh_clock as _fresh_clock
from tests.helpers import (
    IN_CI,
    ROOT,
    DaphneProcess,
    Nginx,
    RedisServer,
    configure_redis,
    database_name,
    free_port,
    render_site,
    require_tool,
    wait_for_port,
    write_pem,
)
from wsops.deploy.certs import mint

_fresh_clock.install()  # before any test code reads the clock, so durations stay right

# Hypothesis budgets: "ci" by default; `--hypothesis-profile=deep` for long local runs.
hypothesis_settings.register_profile("ci", max_examples=300, deadline=None, derandomize=IN_CI,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile("deep", max_examples=20000, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    external = os.environ.get("REDIS_URL")
    prefix = f"wsopstest-{uuid.uuid4().hex[:8]}:" if external else ""
    server = RedisServer(external, prefix=prefix, tmp=tmp_path_factory.mktemp("redis"))
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path) -> RedisServer:
    server = RedisServer(None, tmp=tmp_path)
    yield server
    server.kill()


@pytest.fixture
def use_redis(settings, redis_server):
    """Point this process' wsops, cache and channel layer at the test Redis."""
    return configure_redis(settings, redis_server)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def fresh_clock(monkeypatch) -> float:
    """``time.monotonic()`` reads 1.0 now, as on a host booted a second ago (this test).

    Returns the shift. A constant shift keeps asyncio's timers and every duration right.
    """
    monotonic, monotonic_ns, offset = _fresh_clock.shifted()
    monkeypatch.setattr(time, "monotonic", monotonic)
    monkeypatch.setattr(time, "monotonic_ns", monotonic_ns)
    return offset


@pytest.fixture
def daphne_server(request, tmp_path):
    """Start real daphne workers: ``daphne_server(redis=server, wsops={...})``.

    Each runs daphne's command line through ``tests/fresh_clock.py``: its monotonic
    clock starts near zero, as on a freshly booted host. ``project=`` serves another
    Django project (its directory; the settings module must then be given too).
    """
    started: list[DaphneProcess] = []

    def start(*, redis: RedisServer | None = None, wsops: dict | None = None,
              settings_module: str = "tests.settings", application: str =
              "chatproject.asgi:application", extra_args: list[str] | None = None,
              env: dict | None = None, unix_socket: str | None = None,
              port: int | None = None, project: Path | None = None) -> DaphneProcess:
        import json

        port = port or free_port()
        log = tmp_path / f"daphne-{port}.log"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(project or ROOT / "example")]),
        }
        if project is None:  # the example project on the test database
            environment.update(WSOPS_TEST_DB_NAME=database_name(),
                               WSOPS_TEST_WSOPS=json.dumps(wsops or {}))
        environment.update(env or {})
        if redis is not None:
            environment["WSOPS_TEST_REDIS_URL"] = redis.url
            environment["WSOPS_TEST_KEY_PREFIX"] = redis.prefix
        bind = ["-u", unix_socket] if unix_socket else ["-b", "127.0.0.1", "-p", str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.fresh_clock", *bind, *(extra_args or []),
                 application],
                cwd=project or ROOT / "example", env=environment, stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = DaphneProcess(process, port, log)
        started.append(server)
        try:
            if unix_socket:
                deadline = time.monotonic() + 20
                while not os.path.exists(unix_socket) and time.monotonic() < deadline:
                    time.sleep(0.05)
            else:
                wait_for_port(port, process=process)
        except RuntimeError as error:
            raise RuntimeError(f"daphne did not start: {error}\n{server.output()}")
        return server

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for server in started:
        server.stop()
        if failed:
            print(f"\n--- daphne on port {server.port} ---\n{server.output()[-6000:]}")


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
def app():
    """The example project's ASGI application (SecureWebsocketStack around the chat)."""
    from chatproject.asgi import application

    return application


@pytest.fixture
def make_user(django_user_model):
    """Create users: ``make_user("alice", perms=["chat.send_message"])``."""

    def make(username: str = "alice", *, perms: tuple[str, ...] = (), **fields):
        from django.contrib.auth.models import Permission

        user = django_user_model.objects.create_user(username=username, password="pw", **fields)
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return user

    return make


@pytest.fixture
def secret_for(make_user):
    """``await secret_for("alice")``: a token secret of a new user who may send messages."""
    from channels.db import database_sync_to_async

    from wsops import tokens

    @database_sync_to_async
    def make(username="alice"):
        return tokens.issue(make_user(username, perms=("chat.send_message",)),
                            scopes=["chat:write"])[1]

    return make


@pytest.fixture
def events():
    """Collect wsops security events emitted in this process."""
    from wsops.signals import security_event

    collected: list[dict] = []

    def receiver(sender, event, **kwargs):
        collected.append(event)

    security_event.connect(receiver, weak=False)
    yield collected
    security_event.disconnect(receiver)


@pytest.fixture(autouse=True)
def _fresh_local_state():
    """The in-process limiter and caches must not leak between tests."""
    from wsops.limits.engine import reset_local_limiter

    reset_local_limiter()
    yield


@pytest.fixture
def pebble(tmp_path):
    """A local ACME server (pebble, with challtestsrv answering DNS: every name is
    127.0.0.1); ``url`` is its directory, ``http_port`` and ``tls_port`` where it checks
    HTTP-01 and TLS-ALPN-01, ``ca`` the CA of its own TLS certificate (not the one it
    issues from)."""
    import json

    from tests.frontends import write_pem
    from wsops.deploy.certs import mint

    pebble_bin = require_tool("pebble")
    challtestsrv = require_tool("pebble-challtestsrv")
    leaf, key, ca = mint(["localhost", "127.0.0.1"])
    write_pem(tmp_path / "pebble-cert.pem", leaf, ca)
    write_pem(tmp_path / "pebble-key.pem", key)
    write_pem(tmp_path / "pebble-ca.pem", ca)
    acme_port, dns_port, management = free_port(), free_port(), free_port()
    http_port, tls_port = free_port(), free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}", "managementListenAddress":
        f"127.0.0.1:{free_port()}", "certificate": str(tmp_path / "pebble-cert.pem"),
        "privateKey": str(tmp_path / "pebble-key.pem"), "httpPort": http_port,
        "tlsPort": tls_port, "ocspResponderURL": "", "externalAccountBindingRequired": False,
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
                              "tls_port": tls_port, "ca": tmp_path / "pebble-ca.pem"})
    for process in (server, dns):
        process.terminate()
        process.wait(10)


@pytest.fixture
def evil_site():
    """An attacker's page on another origin (http://localhost:<port>)."""
    pages = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, f"http://localhost:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def chromium():
    executable = require_tool("chromium")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("playwright is not installed (pip install -e '.[dev]')", pytrace=False)
    return executable, async_playwright
