"""``--live``: connect to the configured Redis servers and report one line each.

URLs appear in the findings only through ``store.masked``: a password may sit
in the userinfo, in a ``password=`` parameter (the only place a ``unix://`` URL
has) or beside the URL in a channels-redis host dict.

On a Redis Cluster (``REDIS_CLUSTER``) each master gets the server checks, and the
cluster its own: every slot served, every master with a replica. Under Sentinel
(``REDIS_SENTINELS``) the primary the Sentinels name gets the server checks, and
the Sentinels theirs: each reachable, the service known, quorum reachable
(``SENTINEL CKQUORUM``), replicas known.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Info, Warning

from .. import store
from .rules import RedisHost, _is_local, _redis_hosts, redis_channel_layers

SAFE_POLICIES = {"noeviction"}
TIMEOUTS = {"socket_timeout": 2, "socket_connect_timeout": 2}
SLOTS = 16384
WSOPS_STATE = "WSOPS rate limits"


def targets() -> list[tuple[str, RedisHost]]:
    """``(what, host)`` for wsops' shared state and each channels-redis layer (a
    cluster's or Sentinel's nodes are found by ``topology_check``)."""
    found = []
    if store.topology() == store.STANDALONE and (url := store.redis_url()):
        found.append((WSOPS_STATE, RedisHost(url, {})))
    for alias, layer in redis_channel_layers():
        found.extend((f"CHANNEL_LAYERS[{alias!r}]", host) for host in _redis_hosts(layer))
    return found


def _anonymous(client: Any) -> Any:
    """A client for the same server without credentials, wherever they were given:
    redis-py has already parsed them out of the URL and its options."""
    import redis

    pool = client.connection_pool
    kwargs = {key: value for key, value in pool.connection_kwargs.items()
              if key not in ("username", "password", "credential_provider")}
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))


def check() -> list[CheckMessage]:
    import redis

    messages: list[CheckMessage] = topology_check()
    for what, host in targets():
        shown = store.masked(host.url)
        try:
            client = redis.from_url(host.url, **{**host.options, **TIMEOUTS},
                                    decode_responses=True)
        except ValueError:  # its text may quote pieces of the URL, password included
            messages.append(Error(f"{what}: {shown} is not a Redis URL.",
                                  hint="Use redis://, rediss:// or unix:// URLs.",
                                  id="wsops.E301"))
            continue
        messages += server_check(what, shown, host.url, client)
    return messages


def server_check(what: str, shown: str, url: str, client: Any) -> list[CheckMessage]:
    """One server's facts: reachable, version, eviction policy, password required."""
    import redis

    messages: list[CheckMessage] = []
    try:
        info = client.info()
    except (redis.RedisError, TypeError) as error:  # TypeError: an unknown ?option=
        messages.append(Error(f"{what}: Redis at {shown} is unreachable "
                              f"({type(error).__name__}: {error}).",
                              hint="Start Redis or fix the URL; with FAIL_MODE='closed' "
                                   "new sockets are refused with 1013 meanwhile.",
                              id="wsops.E301"))
        return messages
    policy = info.get("maxmemory_policy", "noeviction")
    messages.append(Info(f"{what}: Redis {info.get('redis_version')} at {shown}, "
                         f"maxmemory-policy {policy}, {info.get('connected_clients')} "
                         "clients.", id="wsops.I301"))
    if policy not in SAFE_POLICIES:
        messages.append(Warning(
            f"{what}: maxmemory-policy is {policy}: under memory pressure Redis evicts "
            "rate-limit counters, bans and channel messages (limits silently reset).",
            hint="CONFIG SET maxmemory-policy noeviction (and size maxmemory).",
            id="wsops.W302"))
    try:
        _anonymous(client).ping()
    except redis.RedisError:
        return messages  # authentication is required: good
    if _is_local(url):
        messages.append(Info(f"{what}: Redis at {shown} answers without a password "
                             "(loopback only).", id="wsops.I302"))
    else:
        messages.append(Warning(f"{what}: Redis at {shown} answers without a password.",
                                hint="Set requirepass (or ACL users) and put the password "
                                     "in the URL.", id="wsops.W301"))
    return messages


def topology_check() -> list[CheckMessage]:
    """The cluster's or the Sentinels' state (nothing for a standalone Redis)."""
    kind = store.topology()
    if kind == store.CLUSTER:
        return cluster_check()
    if kind == store.SENTINEL:
        return sentinel_check()
    return []


def cluster_check() -> list[CheckMessage]:
    import redis

    shown = store.masked(store.redis_url())
    try:
        client = store.sync_client(timeout=TIMEOUTS["socket_timeout"])
        info = client.cluster_info()
        nodes = client.cluster_nodes()
    except redis.RedisError as error:
        return [Error(f"{WSOPS_STATE}: Redis Cluster via {shown} is unreachable "
                      f"({type(error).__name__}: {error}).",
                      hint="Check REDIS_URL names a cluster node; with FAIL_MODE='closed' "
                           "new sockets are refused with 1013 meanwhile.", id="wsops.E302")]
    masters = {node_id: address for address, node_id, flags in _nodes(nodes)
               if "master" in flags and "fail" not in flags}
    replicated = {node["master_id"] for node in nodes.values()
                  if "slave" in node["flags"] and "fail" not in node["flags"]}
    served = int(info.get("cluster_slots_ok", 0))
    messages: list[CheckMessage] = [Info(
        f"{WSOPS_STATE}: Redis Cluster via {shown}: state {info.get('cluster_state')}, "
        f"{len(masters)} masters, {len(replicated & set(masters))} of them replicated, "
        f"{served} of {SLOTS} slots served.", id="wsops.I303")]
    if info.get("cluster_state") != "ok" or served < SLOTS:
        messages.append(Error(
            f"{WSOPS_STATE}: the cluster serves {served} of {SLOTS} slots (state "
            f"{info.get('cluster_state')}): identities whose keys hash there get FAIL_MODE.",
            hint="redis-cli --cluster check <node>, then --cluster fix or bring the failed "
                 "master (or a replica of it) back.", id="wsops.E303"))
    for node_id, address in sorted(masters.items(), key=lambda item: item[1]):
        if node_id not in replicated:
            messages.append(Warning(
                f"{WSOPS_STATE}: cluster master {address} has no replica: if it dies, its "
                "slots are lost until it returns (those identities get FAIL_MODE).",
                hint="redis-cli --cluster add-node <new> <existing> --cluster-slave "
                     "--cluster-master-id <id>.", id="wsops.W303"))
    for node in store.primaries(client):
        address = f"{node.connection_pool.connection_kwargs.get('host')}:" \
                  f"{node.connection_pool.connection_kwargs.get('port')}"
        messages += server_check(WSOPS_STATE, address, f"redis://{address}", node)
    return messages


def _nodes(nodes: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(address, node id, flags)`` of CLUSTER NODES as redis-py parses it."""
    return [(address, node["node_id"], node["flags"]) for address, node in nodes.items()]


def sentinel_check() -> list[CheckMessage]:
    """Each Sentinel asked for the service: quorum reachable, replicas known."""
    import redis

    service = store.sentinel_service()
    messages: list[CheckMessage] = []
    primary = None
    for host, port in store.sentinel_addresses():
        sentinel = redis.Redis(host=host, port=port, decode_responses=True, **TIMEOUTS)
        try:
            state = sentinel.sentinel_master(service)
        except redis.RedisError as error:
            messages.append(Warning(
                f"{WSOPS_STATE}: Sentinel {host}:{port} does not answer for {service!r} "
                f"({type(error).__name__}: {error}).",
                hint="Start it, or check the address and that it monitors this service "
                     "(SENTINEL MONITOR).", id="wsops.W304"))
            continue
        primary = primary or (state["ip"], int(state["port"]))
        replicas, others = int(state.get("num-slaves", 0)), int(state.get("num-other-sentinels", 0))
        messages.append(Info(
            f"{WSOPS_STATE}: Sentinel {host}:{port}: {service!r} primary {state['ip']}:"
            f"{state['port']}, quorum {state.get('quorum')}, {replicas} replicas, "
            f"{others + 1} Sentinels.", id="wsops.I304"))
        try:
            sentinel.execute_command("SENTINEL", "CKQUORUM", service)
        except redis.RedisError as error:
            messages.append(Warning(
                f"{WSOPS_STATE}: Sentinel {host}:{port} cannot fail {service!r} over: "
                f"{error}.", hint="Run at least 3 Sentinels on separate hosts and set a "
                                  "quorum a majority of them can reach.", id="wsops.W305"))
        if replicas == 0:
            messages.append(Warning(
                f"{WSOPS_STATE}: Sentinel {host}:{port} knows no replica of {service!r}: "
                "nothing to promote if the primary dies.",
                hint="Add a replica (replicaof <primary>); Sentinel finds it by itself.",
                id="wsops.W306"))
    if primary is None:
        return [*messages, Error(
            f"{WSOPS_STATE}: no Sentinel names a primary for {service!r}.",
            hint="Check WSOPS['REDIS_SENTINELS'] and WSOPS['REDIS_SENTINEL_SERVICE']; with "
                 "FAIL_MODE='closed' new sockets are refused with 1013 meanwhile.",
            id="wsops.E304")]
    address = f"{primary[0]}:{primary[1]}"
    client = redis.Redis(host=primary[0], port=primary[1], decode_responses=True,
                         **TIMEOUTS, **store.credentials())
    return messages + server_check(WSOPS_STATE, address, f"redis://{address}", client)
