"""OriginGuard: the allowed-origin table against each authentication method, and CSWSH."""

import pytest
from channels.db import database_sync_to_async

from wsops import tokens
from wsops.middleware import SecureWebsocketStack
from wsops.origins import build_policy, current_policy, derived_origins
from wsops.testing import LiveSocket, SecureCommunicator

# tests.settings: ["https://app.example.com", "https://*.example.org", "http://localhost:8443"]
ORIGINS = [
    ("https://app.example.com", True),
    ("https://APP.Example.com", True),
    ("https://app.example.com:443", True),
    ("https://chat.example.org", True),
    ("https://a.b.example.org", True),
    ("http://localhost:8443", True),
    ("https://app.example.com:8443", False),  # wrong port
    ("http://app.example.com", False),  # wrong scheme
    ("https://example.org", False),  # a wildcard means subdomains only
    ("https://example.org.evil.net", False),
    ("https://evilexample.org", False),
    ("https://app.example.com.evil.net", False),
    ("https://evil.example", False),
    ("http://localhost", False),
    ("null", False),
    ("garbage", False),
    ("https://", False),
    ("https://user@app.example.com", False),
    ("https://app.example.com/path", False),
    ("\u00ff\u00fe\u0000", False),
    ("", False),
]


@pytest.mark.parametrize(("origin", "allowed"), ORIGINS)
def test_policy_table(origin, allowed):
    assert current_policy().allows(origin) is allowed


def test_missing_origin_is_not_allowed_by_the_policy():
    assert current_policy().allows(None) is False


def test_star_allows_anything_but_null():
    policy = build_policy(["*"])
    assert policy.allows("https://anything.test") and not policy.allows("null")


def test_defaults_derive_from_allowed_hosts_and_csrf_trusted_origins(settings):
    settings.WSOPS = {k: v for k, v in settings.WSOPS.items() if k != "ALLOWED_ORIGINS"}
    settings.ALLOWED_HOSTS = ["app.example.com", ".example.net"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://admin.example.io"]
    settings.DEBUG = False
    policy = current_policy()
    assert policy.allows("https://app.example.com")
    assert policy.allows("https://x.example.net") and policy.allows("https://example.net")
    assert policy.allows("https://admin.example.io")
    assert not policy.allows("http://app.example.com")
    settings.DEBUG = True
    assert current_policy().allows("http://app.example.com:8000")
    assert "https://app.example.com" in derived_origins()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("origin", "allowed"), [*ORIGINS, (None, None)])
@pytest.mark.parametrize("method", ["cookie", "token"])
async def test_origin_by_auth_method(app, make_user, events, origin, allowed, method):
    user = await database_sync_to_async(make_user)("alice")
    kwargs = {"user": user} if method == "cookie" else {
        "token": (await database_sync_to_async(tokens.issue)(user))[1]}
    if origin is None:
        # cookie: a browser always sends Origin, so none means a forged client: refuse.
        # token: non-browser clients send none: allow.
        allowed = method == "token"
    else:
        kwargs["origin"] = origin
    outcome = await SecureCommunicator(app, "/ws/chat/lobby/", **kwargs).outcome()
    assert outcome.accepted is allowed
    if not allowed:
        origin_events = [e for e in events if e["kind"] == "origin"]
        assert len(origin_events) == 1
        assert origin_events[0]["origin"] == origin


async def test_stack_refuses_to_wrap_http():
    stack = SecureWebsocketStack(lambda *args: None)
    with pytest.raises(ValueError, match="only handles websocket connections"):
        await stack({"type": "http", "path": "/"}, None, None)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
async def test_cross_site_hijacking_with_a_real_session_cookie_is_refused(daphne_server,
                                                                          make_user):
    from django.conf import settings as django_settings
    from django.test import Client

    def login():
        make_user("victim")
        client = Client()
        client.login(username="victim", password="pw")
        return client.cookies[django_settings.SESSION_COOKIE_NAME].value

    session = await database_sync_to_async(login)()
    server = daphne_server()
    cookies = {django_settings.SESSION_COOKIE_NAME: session}
    hijack = await LiveSocket.open(server.url(), cookies=cookies, origin="https://evil.example")
    assert hijack.status == 403
    own = await LiveSocket.open(server.url(), cookies=cookies, origin="https://app.example.com")
    assert own.accepted
    await own.send_json({"action": "whoami"})
    assert (await own.recv_json())["auth_method"] == "session"
    await own.close()
    assert "origin refused: origin_not_allowed" in server.output()
    assert 'origin="https://evil.example"' in server.output()
