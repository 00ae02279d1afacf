"""wsops on a real Redis Cluster (3 masters, 3 replicas) and a real Sentinel set
(a primary, a replica, 3 Sentinels), with two daphne workers, and through failovers.

The channel layer runs beside them as README shows: on a standalone Redis next to
the cluster (channels-redis does not speak Cluster), and through the Sentinels
(channels-redis' ``sentinels`` host form) next to the Sentinel-monitored primary.
"""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.core.management import call_command
from websockets.exceptions import ConnectionClosed

from tests.helpers import configure_redis, echoes_in_turn, handshakes_in_turn
from tests.topologies import TOPOLOGIES, ClusterTopology, client, flush
from wsops import tickets, tokens
from wsops.limits.keys import tag
from wsops.testing import LiveSocket, SocketClosed

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module", params=sorted(TOPOLOGIES))
def topology(request, tmp_path_factory):
    started = TOPOLOGIES[request.param](tmp_path_factory.mktemp(request.param))
    yield started
    started.stop()


def _point_at(settings, topology, side, layer_through_sentinel: bool = True) -> dict:
    """This process on ``topology`` (layer and cache as the workers get them); returns
    the daphne_server arguments that start a worker the same way."""
    configure_redis(settings, side)
    settings.WSOPS = {**settings.WSOPS, **topology.wsops}
    env = {}
    if not isinstance(topology, ClusterTopology) and layer_through_sentinel:
        host = topology.layer_host()
        settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [host]
        env["WSOPS_TEST_LAYER_HOSTS"] = json.dumps([host])
        channel_layers.backends.clear()
    return {"redis": side, "env": env}


@pytest.fixture
def deployment(settings, topology, private_redis, daphne_server):
    """``start(**wsops)``: a daphne worker on the topology (state flushed per test)."""
    flush(topology)
    arguments = _point_at(settings, topology, private_redis)

    def start(**wsops):
        return daphne_server(wsops={**topology.wsops, **wsops}, **arguments)

    return start


def _command(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


async def test_token_and_connect_rate_hold_across_two_workers(deployment, secret_for):
    workers = [deployment(RATES={"connect": "5/m"}) for _ in range(2)]
    secret = await secret_for()
    assert await handshakes_in_turn(workers, secret, 8) == [True] * 5 + [False] * 3
    shown = json.loads(await database_sync_to_async(_command)("wsratelimit", "show", "--json"))
    used = {(c["kind"], c["id"]): c["used"] for c in shown["counters"] if c["scope"] == "connect"}
    assert used[("ip", "127.0.0.1")] == 5  # refused attempts are not charged
    assert len([key for key in used if key[0] == "user"]) == 1
    top = json.loads(await database_sync_to_async(_command)("wsratelimit", "top", "--json"))
    assert top, "top lists the busiest counters"
    for ident in ("ip:127.0.0.1", "user:alice"):
        await database_sync_to_async(_command)("wsratelimit", "reset", ident)
    again = await LiveSocket.open(workers[0].url(), token=secret)
    assert again.accepted, "reset on every master frees the connect rate"
    await again.close()


async def test_user_message_rate_spans_sockets_on_two_workers(deployment, secret_for):
    one, two = (deployment(RATES={"user_message": "6/m"}, THROTTLE_CLOSE_AFTER=50)
                for _ in range(2))
    secret = await secret_for()
    sockets = [await LiveSocket.open(one.url(), token=secret),
               await LiveSocket.open(two.url(), token=secret)]
    assert await echoes_in_turn(sockets, 10) == ["echo"] * 6 + ["error"] * 4
    for socket in sockets:
        await socket.close()


async def test_connection_cap_across_two_workers_frees_on_close(deployment, secret_for):
    one, two = (deployment(MAX_CONNECTIONS_PER_USER=2) for _ in range(2))
    secret = await secret_for()
    held = await LiveSocket.open(one.url(), token=secret)
    other = await LiveSocket.open(two.url(), token=secret)
    assert held.accepted and other.accepted
    assert (await LiveSocket.open(one.url(), token=secret)).status == 403
    await other.close()
    replacement = await _admitted(two.url(), secret)
    assert replacement is not None, "a closed socket's slot must free"
    assert (await LiveSocket.open(two.url(), token=secret)).status == 403
    for socket in (held, replacement):
        await socket.close()


async def test_block_disconnect_and_unblock(deployment, secret_for):
    one, two = deployment(), deployment()
    secret = await secret_for("mallory")
    live = [await LiveSocket.open(worker.url(), token=secret) for worker in (one, two)]
    assert all(socket.accepted for socket in live)
    await database_sync_to_async(_command)("wsratelimit", "block", "user:mallory", "--for",
                                           "1h", "--reason", "spam", "--disconnect")
    assert [await socket.receive_close() for socket in live] == [4403, 4403]
    assert (await LiveSocket.open(two.url(), token=secret)).status == 403
    await database_sync_to_async(_command)("wsratelimit", "block", "ip:10.9.0.0/16", "--for",
                                           "1h")
    shown = json.loads(await database_sync_to_async(_command)(
        "wsratelimit", "show", "--scope", "bans", "--json"))
    bans = {(ban["kind"], ban["id"]): ban["reason"] for ban in shown["bans"]}
    assert bans[("ip", "10.9.0.0/16")] == ""
    assert "spam" in bans.values()
    await database_sync_to_async(_command)("wsratelimit", "unblock", "user:mallory")
    again = await LiveSocket.open(one.url(), token=secret)
    assert again.accepted
    await again.close()


async def test_one_ticket_raced_on_two_workers_admits_exactly_one(deployment, make_user):
    first, second = deployment(), deployment()
    user = await database_sync_to_async(make_user)("racer")
    for _ in range(3):
        ticket = await database_sync_to_async(tickets.issue)(user)
        results = await asyncio.gather(LiveSocket.open(first.url(), ticket=ticket[0]),
                                       LiveSocket.open(second.url(), ticket=ticket[0]))
        assert sorted(s.accepted for s in results) == [False, True]
        for socket in results:
            await socket.close()


async def test_revoke_disconnect_reaches_the_other_worker(deployment, make_user):
    _, second = deployment(), deployment()
    user = await database_sync_to_async(make_user)("svc")
    token, secret = await database_sync_to_async(tokens.issue)(user)
    socket = await LiveSocket.open(second.url(), token=secret)
    assert socket.accepted
    await database_sync_to_async(_command)("wstokens", "revoke", token.prefix, "--disconnect")
    assert await socket.receive_close(timeout=10) == 4401
    assert (await LiveSocket.open(second.url(), token=secret)).status == 403


async def _admitted(url: str, secret: str, deadline: float = 30) -> LiveSocket | None:
    """Poll (generous deadline) until a new socket is admitted."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        socket = await LiveSocket.open(url, token=secret)
        if socket.accepted:
            return socket
        await asyncio.sleep(0.5)
    return None


# --- failover -----------------------------------------------------------------------


async def _attempt(url: str, secret: str) -> str:
    """One handshake and one echo: ``"admitted"``, ``"http <status>"`` or ``"close <code>"``."""
    socket = await LiveSocket.open(url, token=secret, timeout=20)
    if not socket.accepted:
        return f"http {socket.status}"
    try:
        await socket.send_json({"action": "echo", "text": "new"})
        reply = await socket.recv_json(timeout=20)
    except (SocketClosed, ConnectionClosed):  # closed before or after the frame was sent
        return f"close {socket.connection.close_code}"
    await socket.close()
    return "admitted" if reply.get("text") == "new" else f"frame {reply}"


@pytest.mark.timeout(400)
@pytest.mark.parametrize("kind", sorted(TOPOLOGIES))
async def test_failover_keeps_open_sockets_and_limits_hold_again(
        kind, tmp_path, settings, private_redis, daphne_server, make_user):
    topology = TOPOLOGIES[kind](tmp_path / "topology")
    try:
        await _failover(topology, settings, private_redis, daphne_server, make_user)
    finally:
        topology.stop()


@database_sync_to_async
def _issued_after_failover(user) -> str:
    """A ticket issued on the process' long-lived blocking client (polling: its pool
    may still hold a connection to the dead primary the first time)."""
    from wsops import store

    deadline = time.monotonic() + 60
    while True:
        try:
            return tickets.issue(user)[0]
        except store.store_errors():
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def _failover(topology, settings, side, daphne_server, make_user) -> None:
    # The channel layer stays on the standalone Redis: channels-redis' receive loop
    # raises when its primary dies and Channels then closes every socket with 1011
    # (README, "Redis Cluster and Sentinel"); what is tested here is wsops' own state.
    arguments = _point_at(settings, topology, side, layer_through_sentinel=False)
    wsops = {**topology.wsops, "REDIS_TIMEOUT": 0.5, "MAX_CONNECTIONS_PER_USER": 3,
             "RATES": {"connect": "1000/m", "user_message": "600/m"},
             "THROTTLE_CLOSE_AFTER": 50}
    workers = [daphne_server(wsops=wsops, **arguments) for _ in range(2)]

    @database_sync_to_async
    def users(count: int) -> list[tuple[int, str]]:
        return [(user.pk, tokens.issue(user)[1]) for user in
                (make_user(f"u{index}", perms=("chat.send_message",)) for index in range(count))]

    people = await users(12)
    # The victim's keys live on the master that dies; "fresh" shares that master. On
    # the cluster that is not the node REDIS_URL names: a process starting (or a
    # command running) while that node is down has no node to learn the map from
    # (README), and the commands below run during the failover.
    if isinstance(topology, ClusterTopology):
        named = int(topology.url.rsplit(":", 1)[1].split("/")[0])
        people.sort(key=lambda person: topology.master_of(tag("user", person[0])) == named)
        master = topology.master_of(tag("user", people[0][0]))
        same = [p for p in people[1:] if topology.master_of(tag("user", p[0])) == master]
        assert master != named and same, "12 users, 3 masters: the keys do not spread"
        fresh = same[0]
    else:
        master, fresh = topology.current_primary(), people[1]
    victim = people[0]
    bystanders = [p for p in people[2:] if p != fresh][:3]
    open_sockets = [await LiveSocket.open(workers[i % 2].url(), token=secret)
                    for i, (_, secret) in enumerate([victim, victim, *bystanders])]
    assert all(socket.accepted for socket in open_sockets)

    ticket_user = await database_sync_to_async(make_user)("ticketed")
    await database_sync_to_async(tickets.issue)(ticket_user)  # the blocking client connects
    topology.kill_primary(master)
    outcomes: list[str] = []
    give_up = time.monotonic() + 120
    while True:
        for socket in open_sockets:  # well-behaved traffic, limited by a shared rate
            await socket.send_json({"action": "echo", "text": "alive"})
            assert (await socket.recv_json(timeout=20))["text"] == "alive"
        outcome = await _attempt(workers[len(outcomes) % 2].url(), victim[1])
        outcomes.append(outcome)
        if outcome == "admitted" and len(outcomes) > 1:
            break
        assert time.monotonic() < give_up, f"no handshake admitted after the failover: {outcomes}"
        await asyncio.sleep(1)
    topology.wait_for_failover()
    # Every refusal during the gap was FAIL_MODE="closed"'s: accept, then close 1013.
    assert set(outcomes) <= {"admitted", "close 1013"}, outcomes
    assert "close 1013" in outcomes, f"the dead master was never missed: {outcomes}"

    # Limits hold again on the promoted primary: a cap of 3, and a ban.
    fresh_sockets = [await _admitted(workers[i % 2].url(), fresh[1]) for i in range(3)]
    assert all(fresh_sockets)
    assert (await LiveSocket.open(workers[0].url(), token=fresh[1])).status == 403
    await database_sync_to_async(_command)("wsratelimit", "block", f"user:{victim[0]}",
                                           "--for", "1h")
    assert (await LiveSocket.open(workers[1].url(), token=victim[1])).status == 403
    # The blocking client of this process (the ticket view's) follows the new primary.
    ticket = await _issued_after_failover(ticket_user)
    admitted = await LiveSocket.open(workers[0].url(), ticket=ticket)
    assert admitted.accepted
    for socket in [*fresh_sockets, admitted]:
        await socket.close()
    for socket in open_sockets:
        assert socket.connection.close_code is None, "an open socket was closed"
        await socket.close()
    for worker in workers:
        log = worker.output()
        assert worker.process.poll() is None, "a worker crashed"
        assert log.count("is unreachable") <= 1 and log.count("is reachable again") <= 1, log
    assert sum(w.output().count("is unreachable") for w in workers) >= 1


# --- one decision over several slots ------------------------------------------------


def _checks(user_id: int):
    from wsops.handshake.admission import connect_checks, identity_checks, ip_cap

    return connect_checks("10.0.0.1") + identity_checks(user_id, "wst_abc") + ip_cap("10.0.0.1")


async def _admit(checks, member: str):
    from wsops.limits.engine import get_limiter

    return await get_limiter().admit(bans=checks.bans, limits=checks.limits, caps=checks.caps,
                                     member=member, ttl=30, network="10.0.0.1")


def _left_behind(checks, member: str) -> dict:
    """What ``member``'s refused decision left in Redis: rate values, cap slots."""
    from wsops import store

    client = store.sync_client()
    return {"rates": {limit.key: client.get(limit.key) for limit in checks.limits
                      if client.get(limit.key) is not None},
            "slots": [cap.key for cap in checks.caps
                      if client.zscore(cap.key, member) is not None]}


async def test_a_refusal_in_one_slot_leaves_no_charge_in_the_others(settings, topology,
                                                                    private_redis):
    """The semantics of a decision spanning slots (README): a part that refuses makes
    the parts that committed refund, so a refused event is charged nothing anywhere."""
    from wsops import store
    from wsops.limits import engine
    from wsops.limits.keys import ban_key, cap_key
    from wsops.limits.operators import Identity, ban

    flush(topology)
    _point_at(settings, topology, private_redis)
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_USER": 1,
                      "RATES": {"connect": "10/m"}}
    checks = _checks(7)
    parts = engine._parts(checks.bans, checks.limits, checks.caps, None, "10.0.0.1")
    expected = 4 if isinstance(topology, ClusterTopology) else 1  # ip, user, token, {net}
    assert len(parts) == expected

    await database_sync_to_async(ban)(store.sync_client(), Identity("user", "7"), 3600, "x")
    banned = await _admit(checks, "refused-1")
    assert (banned.outcome, banned.key) == (engine.BANNED, ban_key("user", 7))
    assert await database_sync_to_async(_left_behind)(checks, "refused-1") == {
        "rates": {}, "slots": []}

    store.sync_client().delete(ban_key("user", 7))
    assert (await _admit(_checks(7), "holder")).allowed  # takes the user's only slot
    before = await database_sync_to_async(_left_behind)(checks, "holder")
    over = await _admit(checks, "refused-2")
    assert (over.outcome, over.key) == (engine.OVER_CAP, cap_key("user", 7))
    after = await database_sync_to_async(_left_behind)(checks, "refused-2")
    assert after["slots"] == []  # no IP cap slot for the refused one
    now = await database_sync_to_async(_left_behind)(checks, "holder")
    assert now["rates"].keys() == before["rates"].keys()
    for key, value in now["rates"].items():  # "<TAT ms>|<count>|<period ms>"
        tat_now, tat_before = (float(v.partition("|")[0]) for v in (value, before["rates"][key]))
        assert abs(tat_now - tat_before) < 1, f"the refused attempt moved {key}"


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)  # Sentinel: one primary
def test_identities_spread_over_every_master(settings, topology, private_redis):
    from wsops.limits.keys import cap_key

    _point_at(settings, topology, private_redis)
    masters = {topology.master_of(cap_key("user", user)) for user in range(30)}
    assert masters == set(topology.masters())


@pytest.mark.parametrize("topology", ["sentinel"], indirect=True)  # django-redis: no Cluster
async def test_a_django_redis_cache_on_sentinel_serves_as_wsops_store(settings, topology):
    from wsops import store
    from wsops.limits.engine import Limit, get_limiter
    from wsops.limits.keys import rate_key
    from wsops.units import Rate

    flush(topology)
    settings.CACHES = {**settings.CACHES, "shared": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://{topology.SERVICE}/0",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.SentinelClient",
                    "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                    "SENTINELS": [("127.0.0.1", port) for port in topology.sentinels]}}}
    settings.WSOPS = {"CACHE": "shared", "REDIS_TIMEOUT": 2}
    assert store.topology() == store.SENTINEL
    limit = (Limit(rate_key("connect", "user", 1), Rate(1, 60)),)
    assert (await get_limiter().admit(limits=limit)).allowed
    assert not (await get_limiter().admit(limits=limit)).allowed
    from django.core.cache import caches

    caches["shared"].set("probe", 1)  # the cache itself works on the same primary
    assert caches["shared"].get("probe") == 1


async def test_scripts_load_again_where_a_node_forgot_them(settings, topology, private_redis):
    """NOSCRIPT (a promoted replica, a restarted node): the script runs with EVAL."""
    from wsops.limits.engine import Limit, get_limiter
    from wsops.limits.keys import rate_key
    from wsops.units import Rate

    flush(topology)
    _point_at(settings, topology, private_redis)
    limit = (Limit(rate_key("connect", "user", 9), Rate(2, 60)),)
    assert (await get_limiter().admit(limits=limit)).allowed
    for port in (topology.masters() if isinstance(topology, ClusterTopology)
                 else [topology.current_primary()]):
        client(port).script_flush()
    assert (await get_limiter().admit(limits=limit)).allowed
    assert not (await get_limiter().admit(limits=limit)).allowed


# --- wssecure check --live ----------------------------------------------------------
# Last in the module: each breaks its topology a little (a replica, a Sentinel).


def _live_findings() -> list[dict]:
    out = io.StringIO()
    try:
        call_command("wssecure", "check", "--live", "--json", stdout=out)
    except SystemExit:
        pass  # exit status 1: findings at or above --fail-level
    return json.loads(out.getvalue())["findings"]


def test_live_check_reports_the_topology(settings, topology, private_redis):
    _point_at(settings, topology, private_redis)
    findings = _live_findings()
    ids = [finding["id"] for finding in findings]
    if isinstance(topology, ClusterTopology):
        assert ids.count("wsops.I303") == 1 and "16384 of 16384 slots" in str(findings)
        assert ids.count("wsops.I301") >= 3  # each master's server facts
        assert not {"wsops.E302", "wsops.E303", "wsops.W303"} & set(ids)
        replica = next(port for port in topology.ports if port not in topology.masters())
        topology.nodes.kill(replica)
        deadline = time.monotonic() + 60
        while "wsops.W303" not in ids and time.monotonic() < deadline:
            time.sleep(1)  # until the cluster flags the replica as failed
            ids = [finding["id"] for finding in _live_findings()]
        assert "wsops.W303" in ids  # its master has no replica left
    else:
        assert ids.count("wsops.I304") == 3 and "quorum 2, 1 replicas" in str(findings)
        assert not {"wsops.W304", "wsops.W305", "wsops.W306", "wsops.E304"} & set(ids)
        topology.nodes.kill(topology.sentinels[2])
        ids = [finding["id"] for finding in _live_findings()]
        assert ids.count("wsops.W304") == 1 and ids.count("wsops.I304") == 2
        assert "wsops.W305" not in ids  # 2 of 3 still make the quorum and a majority
