"""Bring your own credentials: SimpleJWT, DRF and OAuth2 tokens on a real daphne + Redis.

For each kind: accepted by subprotocol and by header; refused (403, an ``auth``
event, never an anonymous socket) when expired, malformed or signed with another
key; revocation (blacklist, delete) refuses new handshakes and closes live
sockets; scopes reach ``HasScope``; expiry closes live sockets with 4401.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import timedelta

import jwt as pyjwt
import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from wsops import auth
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ALL = ["wsops.auth.SimpleJWTAuthenticator", "wsops.auth.DRFTokenAuthenticator",
       "wsops.auth.OAuth2Authenticator", *("wsops.auth.TokenAuthenticator",
                                          "wsops.auth.TicketAuthenticator")]


@pytest.fixture
def chain(settings, use_redis):
    """This process (where rows change) and the workers run the same chain."""
    settings.WSOPS = {**settings.WSOPS, "AUTHENTICATORS": ALL}
    auth.connect_signals()
    return use_redis


@pytest.fixture
def server(daphne_server, chain):
    return daphne_server(redis=chain, wsops={"AUTHENTICATORS": ALL})


# --- issuing each kind ---------------------------------------------------------------


class JWT:
    kind, scheme = "jwt", "Bearer"

    @staticmethod
    def issue(user, scope="chat:write", lifetime=timedelta(minutes=5)):
        from rest_framework_simplejwt.tokens import AccessToken

        token = AccessToken.for_user(user)
        token.set_exp(lifetime=lifetime)
        if scope:
            token["scope"] = scope
        return str(token)

    @staticmethod
    def other_key(user):
        return pyjwt.encode({"token_type": "access", "user_id": user.pk, "jti": "x" * 32,
                             "exp": int(time.time()) + 300}, "another-key" * 4,
                            algorithm="HS256")

    @staticmethod
    def revoke(secret):
        from rest_framework_simplejwt.token_blacklist.models import (
            BlacklistedToken,
            OutstandingToken,
        )
        from rest_framework_simplejwt.tokens import AccessToken

        token = AccessToken(secret)
        outstanding = OutstandingToken.objects.create(
            jti=token["jti"], token=secret, user_id=token["user_id"],
            expires_at=timezone.now() + timedelta(minutes=5))
        BlacklistedToken.objects.create(token=outstanding)


class DRF:
    kind, scheme = "drf", "Token"

    @staticmethod
    def issue(user, scope=None, lifetime=None):
        from rest_framework.authtoken.models import Token

        return Token.objects.create(user=user).key

    @staticmethod
    def other_key(user):
        return secrets.token_hex(20)  # the right shape, in no table

    @staticmethod
    def revoke(secret):
        from rest_framework.authtoken.models import Token

        Token.objects.filter(key=secret).delete()


class OAuth2:
    kind, scheme = "oauth2", "Bearer"

    @staticmethod
    def issue(user, scope="chat:write", lifetime=timedelta(minutes=5)):
        from oauth2_provider.models import get_access_token_model, get_application_model

        application = get_application_model().objects.create(
            name="api", user=user, client_type="confidential",
            authorization_grant_type="password")
        secret = secrets.token_urlsafe(24)
        get_access_token_model().objects.create(
            user=user, application=application, token=secret, scope=scope or "",
            expires=timezone.now() + lifetime)
        return secret

    @staticmethod
    def other_key(user):
        return secrets.token_urlsafe(24)

    @staticmethod
    def revoke(secret):
        import hashlib

        from oauth2_provider.models import get_access_token_model

        checksum = hashlib.sha256(secret.encode()).hexdigest()
        get_access_token_model().objects.get(token_checksum=checksum).revoke()


KINDS = [JWT, DRF, OAuth2]
ids = [k.kind for k in KINDS]


async def whoami(socket):
    await socket.send_json({"action": "whoami"})
    return await socket.receive_json()


async def wait_for_log(server, pattern, deadline=30):
    """The daphne log gains a line (events are logged before the answer is sent)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if re.search(pattern, server.output()):
            return True
        await database_sync_to_async(time.sleep)(0.2)
    return False


# --- the tests -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=ids)
async def test_accepted_by_subprotocol_and_by_header(server, make_user, kind):
    user = await database_sync_to_async(make_user)("api")
    secret = await database_sync_to_async(kind.issue)(user)
    by_subprotocol = await LiveSocket.open(server.url(), token=secret)
    assert by_subprotocol.accepted and by_subprotocol.subprotocol == "wsops"
    by_header = await LiveSocket.open(server.url(),
                                      headers={"Authorization": f"{kind.scheme} {secret}"})
    assert by_header.accepted
    for socket, method in ((by_subprotocol, "subprotocol"), (by_header, "header")):
        answer = await whoami(socket)
        assert (answer["user"], answer["auth_method"]) == ("api", method)
        await socket.close()


@pytest.mark.parametrize("kind", KINDS, ids=ids)
async def test_refused_when_expired_malformed_or_from_another_key(server, make_user, kind):
    user = await database_sync_to_async(make_user)("api")
    refused = {"other_key": await database_sync_to_async(kind.other_key)(user),
               "malformed": "bad~token^x|y"}
    if kind is not DRF:  # DRF tokens never expire
        refused["expired"] = await database_sync_to_async(kind.issue)(
            user, lifetime=timedelta(seconds=-60))
    for secret in refused.values():
        for options in ({"token": secret},
                        {"headers": {"Authorization": f"{kind.scheme} {secret}"}}):
            assert (await LiveSocket.open(server.url(), **options)).status == 403
    # Refused by authentication (4401), not let in as anonymous and refused by the consumer.
    assert await wait_for_log(server, r"wsops auth refused: (invalid_jwt|unknown_token|"
                                      r"malformed_credential)")
    if kind is not DRF:
        assert await wait_for_log(server, r"wsops auth refused: expired")
    assert "permission refused" not in server.output()


@pytest.mark.parametrize("kind", KINDS, ids=ids)
async def test_revocation_closes_live_sockets_and_refuses_new_ones(server, make_user, kind):
    user = await database_sync_to_async(make_user)("api")
    secret = await database_sync_to_async(kind.issue)(user)
    socket = await LiveSocket.open(server.url(), token=secret)
    assert socket.accepted
    await database_sync_to_async(kind.revoke)(secret)
    assert await socket.receive_close(timeout=20) == 4401
    assert (await LiveSocket.open(server.url(), token=secret)).status == 403


@pytest.mark.parametrize("kind", [JWT, OAuth2], ids=["jwt", "oauth2"])
async def test_scopes_reach_has_scope(server, make_user, kind):
    user = await database_sync_to_async(make_user)("api", perms=("chat.send_message",))
    allowed = await database_sync_to_async(kind.issue)(user, scope="chat:write chat:read")
    denied = await database_sync_to_async(kind.issue)(user, scope="chat:read")
    for secret, expected in ((allowed, "sent"), (denied, "error")):
        socket = await LiveSocket.open(server.url(), token=secret)
        await socket.send_json({"action": "send_message", "text": "hi"})
        answer = await socket.receive_json()
        if answer.get("type") == "message":  # our own broadcast may come first
            answer = await socket.receive_json()
        assert answer["type"] == expected, answer
        if expected == "error":
            assert answer["code"] == "forbidden"
        await socket.close()


async def test_drf_tokens_carry_no_scopes(server, make_user):
    user = await database_sync_to_async(make_user)("api", perms=("chat.send_message",))
    secret = await database_sync_to_async(DRF.issue)(user)
    socket = await LiveSocket.open(server.url(), token=secret)
    await socket.send_json({"action": "send_message", "text": "hi"})
    answer = await socket.receive_json()
    assert (answer["type"], answer["code"]) == ("error", "forbidden")
    await socket.close()


@pytest.mark.parametrize("kind", [JWT, OAuth2], ids=["jwt", "oauth2"])
async def test_live_socket_closes_at_expiry(server, make_user, kind):
    user = await database_sync_to_async(make_user)("api")
    secret = await database_sync_to_async(kind.issue)(user, lifetime=timedelta(seconds=3))
    socket = await LiveSocket.open(server.url(), token=secret)
    assert socket.accepted
    assert await socket.receive_close(timeout=30) == 4401
    assert await wait_for_log(server, r"wsops auth refused: expired")


async def test_jwt_identifier_reaches_bans_and_events(server, make_user):
    from django.core.management import call_command
    from rest_framework_simplejwt.tokens import AccessToken

    user = await database_sync_to_async(make_user)("api")
    secret = await database_sync_to_async(JWT.issue)(user)
    identifier = f"jwt_{AccessToken(secret)['jti']}"
    assert (await LiveSocket.open(server.url(), token=secret)).accepted
    await database_sync_to_async(call_command)("wsratelimit", "block", f"token:{identifier}",
                                               "--for", "1h", "--reason", "leaked")
    assert (await LiveSocket.open(server.url(), token=secret)).status == 403
    assert await wait_for_log(server, rf"banned refused: leaked .*token={identifier}")
    assert secret not in server.output()
