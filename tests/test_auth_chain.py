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
