"""GraphQL subscriptions (strawberry-graphql, graphql-transport-ws) behind SecureWebsocketStack.

A real daphne serves ``tests/asgi_graphql.py``; the client speaks the protocol with the
``websockets`` library, offering the token in the Authorization header or in the
subprotocol list next to ``graphql-transport-ws``.
"""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from wsops import tokens

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
PROTOCOL = "graphql-transport-ws"


@pytest.fixture
def graphql_server(daphne_server):
    return daphne_server(application="tests.asgi_graphql:application")


async def subscribe(url, *, subprotocols, headers=None):
    """connection_init, one ``whoami`` subscription: the accepted protocol and first reply."""
    async with connect(url, subprotocols=subprotocols, additional_headers=headers or {},
                       open_timeout=10, proxy=None) as socket:
        await socket.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "connection_ack"
        await socket.send(json.dumps({"id": "1", "type": "subscribe",
                                      "payload": {"query": "subscription { whoami }"}}))
        return socket.subprotocol, json.loads(await asyncio.wait_for(socket.recv(), 10))


@pytest.fixture
def secret(make_user):
    return tokens.issue(make_user("gql"))[1]


async def test_a_subscription_authenticated_by_the_authorization_header(graphql_server, secret):
    answered, reply = await subscribe(graphql_server.url("/graphql/"), subprotocols=[PROTOCOL],
                                      headers={"Authorization": f"Bearer {secret}"})
    assert answered == PROTOCOL
    assert reply["type"] == "next"
    assert reply["payload"]["data"]["whoami"] == f"gql|header|{PROTOCOL}"


async def test_a_subscription_with_the_token_in_the_subprotocol_list(graphql_server, secret):
    answered, reply = await subscribe(graphql_server.url("/graphql/"),
                                      subprotocols=[PROTOCOL, "wsops", secret])
    assert answered == PROTOCOL  # the application's choice, not "wsops"
    assert reply["type"] == "next"
    user, method, seen = reply["payload"]["data"]["whoami"].split("|")
    assert (user, method) == ("gql", "subprotocol")
    assert sorted(seen.split(",")) == sorted([PROTOCOL, "wsops"])  # never the secret


async def test_an_anonymous_subscription_is_refused(graphql_server):
    answered, reply = await subscribe(graphql_server.url("/graphql/"), subprotocols=[PROTOCOL])
    assert answered == PROTOCOL
    assert reply["type"] == "error"
    assert reply["payload"][0]["message"] == "authentication required"


async def test_a_bad_token_never_reaches_the_graphql_consumer(graphql_server):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        await subscribe(graphql_server.url("/graphql/"),
                        subprotocols=[PROTOCOL, "wsops", tokens.generate_secret()])
    assert refused.value.response.status_code == 403
