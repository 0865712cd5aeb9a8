"""Real local Redis Cluster and Sentinel setups for tests, started once and stopped by pid.

``LocalCluster``: 3 primaries + 3 replicas of redis-server on loopback ports,
joined with ``redis-cli --cluster create``. ``LocalSentinel``: 1 primary,
1 replica, 3 sentinels. Both use small memory settings, AOF with
``appendfsync always`` (the durability tests need it) and short failure
timeouts so that a failover takes a second or two, not the defaults' 15-30s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.redis_server import free_port

NODE_TIMEOUT_MS = 1000


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: `make test` installs it (apt-get install redis)")
    return path


def command(port: int, *args: str, timeout: float = 5.0) -> str:
    """One redis-cli call to a local node (the fixtures run outside any event loop)."""
    out = subprocess.run(
        [_binary("redis-cli"), "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        # waiting on external processes that offer no event to wait on
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _replica_online(port: int) -> bool:
    """The primary on ``port`` has a replica that finished its initial sync."""
    info = command(port, "INFO", "replication")
    return "connected_slaves:1" in info and "state=online" in info


class Node:
    """One redis-server (data node or sentinel) with its own dir and config file."""

    def __init__(self, root: Path, port: int, config: list[str], *, sentinel: bool = False) -> None:
        self.port = port
        self.dir = root / str(port)
        self.dir.mkdir()
        self.conf = self.dir / "redis.conf"
        self.conf.write_text("\n".join(config) + "\n")
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [_binary("redis-server"), str(self.conf)]
        if self.sentinel:
            args.append("--sentinel")
        self.process = subprocess.Popen(
            args, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_until(lambda: _answers(self.port), f"redis-server on port {self.port}", 10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last fsync, like a crashed host."""
        if self.process is not None and self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.alive:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _data_config(port: int, appendonly: bool = True) -> list[str]:
    return [
        f"port {port}",
        "bind 127.0.0.1",
        "daemonize no",
        "loglevel warning",
        'save ""',
        f"appendonly {'yes' if appendonly else 'no'}",
        "appendfsync always",
        "maxmemory 64mb",
        "maxmemory-policy noeviction",
        "repl-backlog-size 1mb",
        # the default waits 5s for more replicas before a full sync starts
        "repl-diskless-sync-delay 0",
    ]


class LocalCluster:
    """3 primaries + 3 replicas on loopback; ``url`` is the aioqueue cluster URL."""

    def __init__(self, primaries: int = 3, replicas: int = 1, *, appendonly: bool = True) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="aioqueue-cluster-"))
        self.nodes: list[Node] = []
        for _ in range(primaries * (1 + replicas)):
            port, bus = free_port(), free_port()
            config = [
                *_data_config(port, appendonly),
                "cluster-enabled yes",
                f"cluster-port {bus}",
                "cluster-config-file nodes.conf",
                f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                # a replica whose link was down may still take over: tests kill on purpose
                "cluster-replica-validity-factor 0",
                # other shards keep serving while one fails over: queues live apart
                "cluster-require-full-coverage no",
            ]
            self.nodes.append(Node(self.root, port, config))
        self.replicas = replicas

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        out = subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        self.wait_healthy()

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node sees ``cluster_state:ok`` and every primary has a replica online."""

        def healthy() -> bool:
            live = [n for n in self.nodes if n.alive]
            if not all("cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in live):
                return False
            masters = [n for n in live if "role:master" in command(n.port, "INFO", "replication")]
            return len(masters) == len(self.nodes) // (1 + self.replicas) and all(
                _replica_online(n.port) for n in masters
            )

        _wait_until(healthy, "cluster_state:ok with a replica per primary", timeout)

    def primary_for(self, key: str) -> Node:
        """The node that now owns ``key``'s slot (asked of a live node)."""
        live = next(n for n in self.nodes if n.alive)
        slot = int(command(live.port, "CLUSTER", "KEYSLOT", key).strip())
        for line in command(live.port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for rng in fields[8:]:
                lo, _, hi = rng.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return self.node(int(fields[1].split(":")[1].split("@")[0]))
        raise RuntimeError(f"no primary owns slot {slot}")

    def replica_of(self, primary: Node) -> Node:
        for line in command(primary.port, "INFO", "replication").splitlines():
            if line.startswith("slave0:"):
                port = int(dict(kv.split("=") for kv in line[7:].split(","))["port"])
                return self.node(port)
        raise RuntimeError(f"node {primary.port} has no replica")

    def move_slot(self, key: str, target: Node) -> None:
        """Reshards ``key``'s slot, with its keys, to the primary ``target`` (MIGRATE)."""
        source = self.primary_for(key)
        slot = command(source.port, "CLUSTER", "KEYSLOT", key).strip()
        source_id = command(source.port, "CLUSTER", "MYID").strip()
        target_id = command(target.port, "CLUSTER", "MYID").strip()
        command(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        command(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := command(source.port, "CLUSTER", "GETKEYSINSLOT", slot, "100").split():
            command(
                source.port,
                "MIGRATE",
                "127.0.0.1",
                str(target.port),
                "",
                "0",
                "5000",
                "KEYS",
                *keys,
            )
        for node in (target, source, *self.nodes):
            if node.alive:
                command(node.port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def heal(self) -> None:
        """Restarts killed nodes (they rejoin as replicas) and waits for full health."""
        for node in self.nodes:
            if not node.alive:
                node.start()
        self.wait_healthy(60)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class LocalSentinel:
    """1 primary, 1 replica, 3 sentinels monitoring ``service``."""

    service = "aqmaster"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="aioqueue-sentinel-"))
        p1, p2 = free_port(), free_port()
        self.data = [
            Node(self.root, p1, _data_config(p1)),
            Node(self.root, p2, [*_data_config(p2), f"replicaof 127.0.0.1 {p1}"]),
        ]
        self.sentinels: list[Node] = []
        for _ in range(3):
            port = free_port()
            config = [
                f"port {port}",
                "bind 127.0.0.1",
                "daemonize no",
                "loglevel warning",
                f"sentinel monitor {self.service} 127.0.0.1 {p1} 2",
                f"sentinel down-after-milliseconds {self.service} {NODE_TIMEOUT_MS}",
                f"sentinel failover-timeout {self.service} 10000",
                f"sentinel parallel-syncs {self.service} 1",
            ]
            self.sentinels.append(Node(self.root, port, config, sentinel=True))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> None:
        for node in [*self.data, *self.sentinels]:
            node.start()
        self.wait_healthy()

    def primary(self) -> Node:
        """The data node the sentinels now name as primary."""
        out = command(
            self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        ).split()
        port = int(out[1])
        return next(n for n in self.data if n.port == port)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """The named primary is up with its replica online, and every sentinel sees all."""

        def healthy() -> bool:
            primary = self.primary()
            if not primary.alive or not _replica_online(primary.port):
                return False
            for s in self.sentinels:
                info = command(s.port, "SENTINEL", "MASTER", self.service).split()
                fields = dict(zip(info[::2], info[1::2], strict=False))
                if fields.get("port") != str(primary.port) or fields.get("num-other-sentinels") != (
                    "2"
                ):
                    return False
                if fields.get("num-slaves") != "1" or "s_down" in fields.get("flags", ""):
                    return False
            return True

        _wait_until(healthy, "sentinel primary with its replica", timeout)

    def heal(self) -> None:
        """Restarts killed data nodes as replicas of the current primary.

        Sentinel would turn a returning old primary into a replica by itself, but
        only after its next INFO round (up to 10s): the tests do it at once.
        """
        primary = self.primary()
        for node in self.data:
            if not node.alive:
                node.start()
                command(node.port, "REPLICAOF", "127.0.0.1", str(primary.port))
        self.wait_healthy()

    def cleanup(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
