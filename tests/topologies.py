"""Real Redis topologies on loopback, started with the ``redis-server`` binary.

- ``ClusterTopology``: 3 masters and 3 replicas (``redis-cli --cluster create
  ... --cluster-replicas 1``), ``cluster-node-timeout`` 1 s so a failover takes
  a few seconds.
- ``SentinelTopology``: a primary, one replica and 3 Sentinels
  (``redis-server --sentinel``), ``down-after-milliseconds`` 1 s.

Both offer ``wsops`` (the WSOPS keys that point at them), ``kill_primary()`` (a
master dies: SIGKILL, nothing flushed) and ``wait_for_failover()`` (poll, with a
generous deadline, until a replica has been promoted and answers writes).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.helpers import free_port, require_tool, wait_for_port

DEADLINE = 60  # seconds: a failover takes a few; a loaded CI machine may need many more


def _poll(what: str, ready, deadline: float = DEADLINE):
    """``ready()``'s first truthy result, polled every half second until ``deadline``."""
    give_up = time.monotonic() + deadline
    last_error: BaseException | None = None
    while time.monotonic() < give_up:
        try:
            result = ready()
            if result:
                return result
        except (redis.RedisError, OSError) as error:
            last_error = error
        time.sleep(0.5)
    raise RuntimeError(f"{what} after {deadline}s (last error: {last_error!r})")


class _Nodes:
    """redis-server processes by port."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes: dict[int, subprocess.Popen] = {}

    def start(self, port: int, *args: str, config: Path | None = None) -> None:
        binary = require_tool("redis-server")
        directory = self.tmp / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [binary, *([str(config)] if config else []), "--port", str(port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory), *args],
            stdout=(directory / "log").open("wb"), stderr=subprocess.STDOUT)
        wait_for_port(port, process=self.processes[port])

    def kill(self, port: int) -> None:
        process = self.processes.pop(port, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    import socket

    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2,
                       decode_responses=True)


class ClusterTopology:
    def __init__(self, tmp: Path) -> None:
        self.nodes = _Nodes(tmp)
        self.ports = [_cluster_port() for _ in range(6)]
        for port in self.ports:
            self.nodes.start(port, "--cluster-enabled", "yes", "--cluster-node-timeout",
                             "1000", "--cluster-config-file", "nodes.conf",
                             "--cluster-replica-validity-factor", "0")
        cli = require_tool("redis-cli")
        created = subprocess.run([cli, "--cluster", "create",
                                  *(f"127.0.0.1:{port}" for port in self.ports),
                                  "--cluster-replicas", "1", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60)
        if created.returncode:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
        _poll("the cluster is not ok", lambda: all(
            client(port).cluster("info")["cluster_state"] == "ok" for port in self.ports))
        # A replica that never finished its first sync cannot take over.
        _poll("the replicas are not in sync", lambda: all(
            info.get("master_link_status", "up") == "up"
            for info in (client(port).info("replication") for port in self.ports)))
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self.wsops = {"REDIS_URL": self.url, "REDIS_CLUSTER": True}

    def masters(self) -> list[int]:
        return sorted(port for port in self.nodes.processes
                      if client(port).info("replication")["role"] == "master")

    def cluster_client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url, decode_responses=True)

    def master_of(self, key: str) -> int:
        return int(self.cluster_client().get_node_from_key(key).port)

    def kill_primary(self, port: int) -> None:
        self.nodes.kill(port)
        self.dead = port

    def wait_for_failover(self) -> None:
        alive = sorted(self.nodes.processes)
        _poll("no replica took over the dead master's slots", lambda: all(
            client(port).cluster("info")["cluster_state"] == "ok" for port in alive))

    def stop(self) -> None:
        self.nodes.stop()


class SentinelTopology:
    SERVICE = "wsopstest"

    def __init__(self, tmp: Path) -> None:
        self.nodes = _Nodes(tmp)
        self.primary, self.replica = free_port(), free_port()
        self.nodes.start(self.primary)
        self.nodes.start(self.replica, "--replicaof", "127.0.0.1", str(self.primary))
        self.sentinels = [free_port() for _ in range(3)]
        for port in self.sentinels:
            config = tmp / f"sentinel-{port}.conf"
            config.write_text(
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n")
            self.nodes.start(port, "--sentinel", config=config)
        _poll("the replica is not in sync", lambda: client(self.replica).info(
            "replication").get("master_link_status") == "up")
        _poll("the Sentinels do not all know the replica and each other", lambda: all(
            int(client(port).sentinel_master(self.SERVICE)["num-slaves"]) == 1
            and int(client(port).sentinel_master(self.SERVICE)["num-other-sentinels"]) == 2
            for port in self.sentinels))
        self.addresses = [f"127.0.0.1:{port}" for port in self.sentinels]
        self.wsops = {"REDIS_SENTINELS": self.addresses, "REDIS_SENTINEL_SERVICE": self.SERVICE,
                      "REDIS_URL": "redis:///0"}

    def current_primary(self) -> int:
        return int(client(self.sentinels[0]).sentinel_get_master_addr_by_name(self.SERVICE)[1])

    def layer_host(self) -> dict:
        """channels-redis' Sentinel host form for this service."""
        return {"sentinels": [("127.0.0.1", port) for port in self.sentinels],
                "master_name": self.SERVICE}

    def kill_primary(self, port: int | None = None) -> None:
        self.dead = port or self.current_primary()
        self.nodes.kill(self.dead)

    def wait_for_failover(self) -> None:
        def promoted() -> bool:
            port = self.current_primary()
            return port != self.dead and client(port).info("replication")["role"] == "master"

        _poll("Sentinel promoted no replica", promoted)

    def stop(self) -> None:
        self.nodes.stop()


def flush(topology: ClusterTopology | SentinelTopology) -> None:
    """Forget every key (between tests sharing one topology)."""
    if isinstance(topology, ClusterTopology):
        for port in topology.masters():
            client(port).flushall()
    else:
        client(topology.current_primary()).flushall()


TOPOLOGIES = {"cluster": ClusterTopology, "sentinel": SentinelTopology}
