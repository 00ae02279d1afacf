"""The limiter on a 3-master Redis Cluster beside a standalone Redis, in one run.

For each topology: µs per one-slot decision (a message's per-user rate) and per
handshake-shaped decision (address, user and token bans, two rates, two caps, the
CIDR bans and the token-cache read: four slots on a cluster), the Redis calls a
handshake decision makes, and decisions/s with 64 concurrent callers over many
identities, with the Redis CPU each decision costs (summed over the masters):
the figure docs/scaling.md turns into masters per decision rate.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CONCURRENCY = 64


def start_cluster(tmp: Path, free_port: Any, wait_for_port: Any) -> tuple[str, list]:
    """3 masters, no replicas (replicas add no decisions/s): ``(url, processes)``."""
    ports, processes = [], []
    while len(ports) < 3:
        port = free_port()
        if port + 10000 <= 65535:
            ports.append(port)
    for port in ports:
        directory = tmp / f"cluster-{port}"
        directory.mkdir()
        processes.append(subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
            stdout=subprocess.DEVNULL))
        wait_for_port(port)
    subprocess.run([shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{port}" for port in ports), "--cluster-yes"],
                   check=True, capture_output=True, timeout=60)
    import redis

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(redis.Redis(port=p, decode_responses=True).cluster("info")["cluster_state"]
               == "ok" for p in ports):
            break
        time.sleep(0.5)
    return f"redis://127.0.0.1:{ports[0]}/0", processes


def _masters() -> list:
    from wsops import store

    return store.primaries(store.sync_client(timeout=5))


def _stats() -> tuple[int, float]:
    """(EVALSHA + EVAL calls, Redis CPU seconds) summed over the masters."""
    calls, cpu = 0, 0.0
    for node in _masters():
        commands = node.info("commandstats")
        calls += sum(commands.get(f"cmdstat_{name}", {}).get("calls", 0)
                     for name in ("evalsha", "eval"))
        info = node.info("cpu")
        cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return calls, cpu


def _handshake(user: int) -> dict:
    from wsops.limits.engine import Cap, Limit
    from wsops.limits.keys import ban_key, cap_key, rate_key
    from wsops.tokens import cache_key
    from wsops.units import Rate

    ip, rate = f"10.{user % 250}.0.1", Rate(10**9, 60)
    return {"bans": (ban_key("ip", ip), ban_key("user", user), ban_key("token", f"wst_{user}")),
            "limits": (Limit(rate_key("connect", "ip", ip), rate),
                       Limit(rate_key("connect", "user", user), rate)),
            "caps": (Cap(cap_key("ip", ip), 10**6), Cap(cap_key("user", user), 10**6)),
            "member": "bench", "ttl": 0.001, "network": ip, "fetch": cache_key(f"{user:064x}")}


def _message(user: int) -> dict:
    from wsops.limits.engine import Limit
    from wsops.limits.keys import rate_key
    from wsops.units import Rate

    return {"limits": (Limit(rate_key("user_message", "user", user), Rate(10**9, 60)),)}


async def _sequential(shape: Any, decisions: int) -> float:
    from wsops.limits.engine import RedisLimiter

    limiter = RedisLimiter()
    await limiter.admit(**shape(0))
    started = time.perf_counter()
    for index in range(decisions):
        await limiter.admit(**shape(index % 1000))
    return (time.perf_counter() - started) / decisions * 1e6


async def _concurrent(shape: Any, decisions: int) -> float:
    from wsops.limits.engine import RedisLimiter

    limiter = RedisLimiter()
    each = decisions // CONCURRENCY

    async def caller(offset: int) -> None:
        for index in range(each):
            await limiter.admit(**shape((offset * each + index) % 5000))

    started = time.perf_counter()
    await asyncio.gather(*(caller(offset) for offset in range(CONCURRENCY)))
    return each * CONCURRENCY / (time.perf_counter() - started)


def measure(decisions: int) -> dict[str, float]:
    """The figures for the topology the settings name now."""
    one_slot = asyncio.run(_sequential(_message, decisions))
    calls_before, _ = _stats()
    handshake = asyncio.run(_sequential(_handshake, decisions))
    calls_after, _ = _stats()
    _, cpu_before = _stats()
    rate = asyncio.run(_concurrent(_message, decisions * 4))
    _, cpu_after = _stats()
    return {"one_slot_us": one_slot, "handshake_us": handshake,
            "handshake_calls": (calls_after - calls_before) / (decisions + 1),
            "concurrent_decisions_per_s": rate,
            "redis_cpu_us_per_decision": (cpu_after - cpu_before) / (decisions * 4) * 1e6}


def topology_bench(standalone_url: str, cluster_url: str, decisions: int) -> dict:
    from django.conf import settings
    from django.test import override_settings

    results = {}
    for name, wsops in (("standalone", {"REDIS_URL": standalone_url}),
                        ("cluster", {"REDIS_URL": cluster_url, "REDIS_CLUSTER": True})):
        with override_settings(WSOPS={**settings.WSOPS, **wsops, "REDIS_TIMEOUT": 2}):
            results[name] = measure(decisions)
    return results


def report(results: dict) -> None:
    print(f"\nlimiter by topology ({CONCURRENCY} concurrent callers for decisions/s)")
    print(f"{'':<12}{'1-slot us':>10}{'handshake us':>14}{'calls':>7}{'decisions/s':>13}"
          f"{'Redis CPU us':>14}")
    for name, figures in results.items():
        print(f"{name:<12}{figures['one_slot_us']:>10.1f}{figures['handshake_us']:>14.1f}"
              f"{figures['handshake_calls']:>7.2f}{figures['concurrent_decisions_per_s']:>13.0f}"
              f"{figures['redis_cpu_us_per_decision']:>14.1f}")
