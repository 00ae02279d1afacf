"""The admin's live pages, rendered with Django's test client against a real Redis."""

import io
import json
import re

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.test import AsyncClient

from tests.helpers import configure_redis
from wsops import admin as wsops_admin
from wsops import tokens
from wsops.limits import operators
from wsops.limits.engine import Limit, get_limiter
from wsops.limits.keys import ban_key, rate_key
from wsops.limits.operators import Identity
from wsops.testing import SecureCommunicator
from wsops.units import Rate

pytestmark = pytest.mark.django_db(transaction=True)
CONNECTIONS = "/admin/wsops/liveconnection/"
BANS = "/admin/wsops/ban/"
COUNTERS = "/admin/wsops/ratecounter/"
ALL_PERMS = ("wsops.view_liveconnection", "wsops.delete_liveconnection", "wsops.view_ban",
             "wsops.add_ban", "wsops.delete_ban", "wsops.view_ratecounter")


@pytest.fixture
def redis(settings, private_redis):
    """A Redis of this test's own: the pages list everything in it."""
    return configure_redis(settings, private_redis)


@pytest.fixture
def operator(make_user):
    return make_user("ops", perms=ALL_PERMS, is_staff=True)


@pytest.fixture
def ops_client(client, operator):
    client.force_login(operator)
    return client


def table(html, table_id):
    """The text of each row of the table ``table_id``, tags removed."""
    body = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("</thead>")[1], re.S)
    buttons = [re.sub(r'<input type="submit" value="([^"]*)">', r" \1 ", row) for row in rows]
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in buttons]


async def test_live_connections_by_user_and_ip_with_disconnect(redis, make_user, app):
    alice = await database_sync_to_async(make_user)("alice", perms=("chat.send_message",))
    operator = await database_sync_to_async(make_user)("ops", perms=ALL_PERMS, is_staff=True)
    secret = await database_sync_to_async(
        lambda: tokens.issue(alice, scopes=["chat:write"])[1])()
    client = AsyncClient()
    await client.aforce_login(operator)
    async with SecureCommunicator(app, "/ws/chat/lobby/", token=secret) as first, \
            SecureCommunicator(app, "/ws/chat/lobby/", token=secret) as second:
        assert first.accepted and second.accepted
        page = await client.get(CONNECTIONS)
        assert page.status_code == 200
        html = page.content.decode()
        assert table(html, "user-connections") == [f"user:{alice.pk} (alice) 2 50 Disconnect"]
        assert table(html, "ip-network-connections") == ["ip:127.0.0.1 2 500 Disconnect"]
        done = await client.post(CONNECTIONS + "disconnect/", {"ident": "user:alice"})
        assert done.status_code == 302
        assert await first.receive_close() == 4403 and await second.receive_close() == 4403
    page = await client.get(CONNECTIONS)
    assert "No live connections." in page.content.decode()  # released at close
    assert "Asked every worker to close the sockets of user:" in page.content.decode()


def test_bans_add_list_expire_and_remove(redis, ops_client, make_user):
    alice = make_user("alice")
    added = ops_client.post(BANS + "add/", {"ident": "user:alice", "duration": "2h",
                                            "reason": "spam <script>"})
    assert added.status_code == 302 and added["Location"] == BANS
    ops_client.post(BANS + "add/", {"ident": "ip:2001:db8::/48", "duration": "30m"})
    html = ops_client.get(BANS).content.decode()
    assert table(html, "bans") == ["ip:2001:db8::/48 - 30m Remove",
                                   f"user:{alice.pk} spam &lt;script&gt; 2h Remove"]
    client = redis.client()
    assert 7000 < client.ttl(ban_key("user", alice.pk)) <= 7200  # it expires
    removed = ops_client.post(BANS + "unban/", {"ident": f"user:{alice.pk}"})
    assert removed.status_code == 302
    assert table(ops_client.get(BANS).content.decode(), "bans") == [
        "ip:2001:db8::/48 - 30m Remove"]
    # What wsratelimit sees is what the page did.
    out = io.StringIO()
    call_command("wsratelimit", "show", "--scope", "bans", "--json", stdout=out)
    assert [b["id"] for b in json.loads(out.getvalue())["bans"]] == ["2001:db8::/48"]


def test_a_bad_ban_is_refused_with_the_form_errors(redis, ops_client):
    page = ops_client.post(BANS + "add/", {"ident": "user:nobody", "duration": "soon"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "unknown user &#x27;nobody&#x27;" in html and "Expected" in html
    assert table(html, "bans") == ["No bans."]


def test_top_counters_as_wsratelimit_top_shows_them(redis, ops_client):
    admit = async_to_sync(get_limiter().admit)
    for ident, hits in (("10.0.0.1", 4), ("10.0.0.2", 1)):
        for _ in range(hits):
            admit(limits=(Limit(rate_key("connect", "ip", ident), Rate(5, 60)),))
    out = io.StringIO()
    call_command("wsratelimit", "top", "--json", stdout=out)
    expected = [f"{r['identity']} {r['load']:.0%} {r['connections']} "
                + " ".join(f"{s}={v}" for s, v in r["scopes"].items())
                for r in json.loads(out.getvalue())]
    html = ops_client.get(COUNTERS).content.decode()
    assert table(html, "counters") == expected
    assert expected[:2] == ["ip:10.0.0.1 80% 0 connect=4/5", "ip:10.0.0.2 20% 0 connect=1/5"]
    assert table(ops_client.get(COUNTERS + "?scope=message").content.decode(), "counters") == [
        "No live counters."]
    bad = ops_client.get(COUNTERS + "?scope=nope").content.decode()
    assert "Unknown scope" in bad


def test_pages_read_a_bounded_number_of_keys(redis, ops_client, monkeypatch):
    monkeypatch.setattr(wsops_admin, "MAX_KEYS", 40)
    monkeypatch.setattr(wsops_admin, "MAX_ROWS", 10)
    client = redis.client()
    for n in range(100):
        operators.ban(client, Identity("user", str(10_000 + n)), 600, "flood")
    html = ops_client.get(BANS).content.decode()
    assert "Partial: more than 40 keys" in html
    assert len(table(html, "bans")) == 10


def test_the_pages_need_wsops_permissions(redis, client, make_user):
    staff = make_user("staff", is_staff=True)
    client.force_login(staff)
    for url in (CONNECTIONS, BANS, COUNTERS, BANS + "add/"):
        assert client.get(url).status_code == 403, url
    assert client.post(CONNECTIONS + "disconnect/", {"ident": "user:1"}).status_code == 403
    viewer = make_user("viewer", is_staff=True,
                       perms=("wsops.view_liveconnection", "wsops.view_ban"))
    client.force_login(viewer)
    assert client.get(CONNECTIONS).status_code == 200
    assert "Add a ban" not in client.get(BANS).content.decode()
    assert client.post(CONNECTIONS + "disconnect/", {"ident": "user:1"}).status_code == 403
    assert client.post(BANS + "unban/", {"ident": "user:1"}).status_code == 403
    index = client.get("/admin/wsops/").content.decode()
    assert "Live connections" in index and "Top rate counters" not in index


def test_without_redis_the_pages_say_so(ops_client):
    page = ops_client.get(CONNECTIONS)
    assert page.status_code == 200 and "No shared Redis is configured" in page.content.decode()
