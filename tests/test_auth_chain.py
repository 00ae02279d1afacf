"""The authenticator chain in process: order, pass/refuse, a custom kind, the first frame."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from wsops import tokens
from wsops.auth import AuthenticationFailed, BaseAuthenticator
from wsops.handshake.state import TokenInfo
from wsops.handshake.transports import FOREIGN, find_credential
from wsops.testing import SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/ws/chat/lobby/"
ORIGIN = "https://app.example.com"
DEFAULT = ["wsops.auth.TokenAuthenticator", "wsops.auth.TicketAuthenticator",
           "wsops.auth.SessionAuthenticator"]


class PartnerKeys(BaseAuthenticator):
    """A custom kind: ``pk_<username>`` keys, refused when the user is unknown."""

    kind = "partner"

    async def authenticate(self, credential, handshake):
        if not credential.secret.startswith("pk_"):
            return None
        from django.contrib.auth import get_user_model

        name = credential.secret[3:]
        user = await database_sync_to_async(
            get_user_model().objects.filter(username=name).first)()
        if user is None:
            raise AuthenticationFailed("unknown_partner_key")
        return user, TokenInfo(name, self.identifier(credential.secret), ["chat:write"],
                               None, self.kind)


@pytest.fixture
def partner_chain(settings):
    settings.WSOPS = {**settings.WSOPS,
                      "AUTHENTICATORS": ["tests.test_auth_chain.PartnerKeys", *DEFAULT]}


async def whoami(socket):
    await socket.send_json({"action": "whoami"})
    return await socket.receive_json()


def test_token_scheme_and_foreign_values_reach_the_chain():
    scope = {"headers": [(b"authorization", b"Token 0123abcd")], "subprotocols": []}
    found = find_credential(scope, ("header",))
    assert (found.kind, found.scheme, found.secret) == (FOREIGN, "token", "0123abcd")
    scope = {"headers": [(b"authorization", b"Basic dXNlcjpwdw==")]}
    assert find_credential(scope, ("header",)) is None  # not a scheme wsops judges


async def test_a_custom_authenticator_fills_the_same_handshake_fields(app, make_user,
                                                                      partner_chain, events):
    await database_sync_to_async(make_user)("acme")
    async with SecureCommunicator(app, PATH, token="pk_acme") as socket:
        assert socket.accepted
        assert (await whoami(socket))["user"] == "acme"
    async with SecureCommunicator(app, PATH, token="pk_nobody") as socket:
        assert not socket.accepted
    refused = [e for e in events if e["kind"] == "auth"]
    assert [e["reason"] for e in refused] == ["unknown_partner_key"]


async def test_a_credential_nobody_claims_is_refused_not_anonymous(app, partner_chain, events):
    async with SecureCommunicator(app, PATH, token="just-some-value") as socket:
        assert not socket.accepted
    assert [e["reason"] for e in events if e["kind"] == "auth"] == ["malformed_credential"]


async def test_wsops_tokens_still_work_after_a_custom_authenticator(app, make_user,
                                                                   partner_chain):
    user = await database_sync_to_async(make_user)("svc")
    _, secret = await database_sync_to_async(tokens.issue)(user)
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        assert socket.accepted and (await whoami(socket))["user"] == "svc"


async def test_without_the_session_authenticator_cookies_are_not_read(app, make_user,
                                                                     settings):
    alice = await database_sync_to_async(make_user)("alice")
    settings.WSOPS = {**settings.WSOPS, "AUTHENTICATORS": DEFAULT[:2]}
    async with SecureCommunicator(app, PATH, user=alice, origin=ORIGIN) as socket:
        assert not socket.accepted  # anonymous: the consumer's IsAuthenticated refuses
    settings.WSOPS = {**settings.WSOPS, "AUTHENTICATORS": DEFAULT}
    async with SecureCommunicator(app, PATH, user=alice, origin=ORIGIN) as socket:
        assert socket.accepted


async def test_a_jwt_logs_in_by_the_first_frame(app, make_user, settings):
    from rest_framework_simplejwt.tokens import AccessToken

    settings.WSOPS = {**settings.WSOPS,
                      "TOKEN_TRANSPORTS": ["subprotocol", "header", "message"],
                      "AUTHENTICATORS": ["wsops.auth.SimpleJWTAuthenticator", *DEFAULT]}
    user = await database_sync_to_async(make_user)("api")
    token = AccessToken.for_user(user)
    token["scope"] = "chat:read"
    async with SecureCommunicator(app, PATH) as socket:
        await socket.send_json({"action": "authenticate", "token": str(token)})
        assert await socket.receive_json() == {"type": "authenticated"}
        me = await whoami(socket)
        assert (me["user"], me["auth_method"]) == ("api", "message")


def _issue_jwt(user):
    from rest_framework_simplejwt.tokens import AccessToken

    return str(AccessToken.for_user(user))


def _issue_drf(user):
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=user).key


def _issue_oauth2(user):
    import secrets
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_application_model

    application = get_application_model().objects.create(
        name="api", user=user, client_type="confidential", authorization_grant_type="password")
    secret = secrets.token_urlsafe(24)
    get_access_token_model().objects.create(user=user, application=application, token=secret,
                                            expires=timezone.now() + timedelta(hours=1))
    return secret


@pytest.mark.parametrize("issue", [_issue_jwt, _issue_drf, _issue_oauth2],
                         ids=["jwt", "drf", "oauth2"])
async def test_a_warm_handshake_makes_one_redis_trip_and_no_query(app, make_user, settings,
                                                                  private_redis, monkeypatch,
                                                                  issue):
    """Bans, rates, caps and the cached verification (or the JWT owner's fields): one trip."""
    from tests.helpers import configure_redis
    from wsops import store
    from wsops.auth import DRFTokenAuthenticator, OAuth2Authenticator, SimpleJWTAuthenticator

    configure_redis(settings, private_redis)
    settings.WSOPS = {**settings.WSOPS, "AUTHENTICATORS": [
        "wsops.auth.SimpleJWTAuthenticator", "wsops.auth.DRFTokenAuthenticator",
        "wsops.auth.OAuth2Authenticator", *DEFAULT]}
    user = await database_sync_to_async(make_user)("api")
    secret = await database_sync_to_async(issue)(user)
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted  # warms
    trips = []
    real_call = store.call

    async def counted(coroutine, *operation):
        trips.append(1)
        return await real_call(coroutine, *operation)

    def no_database(*args):
        raise AssertionError("a warm handshake read the database")

    monkeypatch.setattr(store, "call", counted)
    monkeypatch.setattr(SimpleJWTAuthenticator, "_load", no_database)
    monkeypatch.setattr(DRFTokenAuthenticator, "load", no_database)
    monkeypatch.setattr(OAuth2Authenticator, "load", no_database)
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        assert socket.accepted and len(trips) == 1
