"""A Redis Cluster on this machine: masters with replicas, each a real ``redis-server`` on a free port.

``RedisShards(directory, masters=3, replicas=1).start()`` starts ``masters × (1 + replicas)`` servers and
joins them with ``redis-cli --cluster create``; ``kill_master(shard)`` SIGKILLs a shard's master and
returns once the cluster has promoted its replica, and ``restart(node)`` brings a killed node back (it
rejoins as a replica of the new master). Failover takes about ``node_timeout_ms``; nodes run without
persistence unless ``appendonly`` (a master without persistence must never restart before its replica
took over: it would come back empty, as the master).
"""

from __future__ import annotations

import collections
import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rnnstream.errors import MissingDependencyError, RnnstreamError


class ClusterError(RnnstreamError):
    """A process of the local topology did not start, or the cluster did not settle in time."""


def tool(name: str) -> str:
    """The path of a program the topology runs; a MissingDependencyError saying how to install it if absent."""
    found = shutil.which(name)
    if found is None:
        raise MissingDependencyError(f"{name} is not installed; `make redis-server haproxy` installs "
                                     "redis-server, redis-cli and haproxy from Debian's packages")
    return found


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=1024)
"""The ports :func:`free_port` returned lately in this process: each stays free until its server binds it, so a
later call could pick it again (a server's HTTP and gRPC ports, picked one after the other, once met: one start in
~35,000). The last 1,024 only, so that a long-lived process never runs out of ports to pick."""


def free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too (Redis wants it ≤ 55535), and none of the
    last 1,024 this process was handed."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(20000, 55535)
        if port not in _HANDED_OUT and _is_free(port) and _is_free(port + 10000):
            _HANDED_OUT.append(port)
            return port
    raise ClusterError("no free pair of loopback ports found")


def stop_process(process: subprocess.Popen[bytes] | None, *, kill: bool = False, timeout: float = 10.0) -> None:
    """SIGTERM ``process`` and wait for it (SIGKILL if it outlives ``timeout``), or SIGKILL it at once (``kill``:
    no shutdown, no final save). Nothing for None or a process that has exited."""
    if process is None:
        return
    if not kill:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=timeout)


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    """Return once something accepts connections on ``port``; a ClusterError if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"{what} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ClusterError(f"{what} did not listen on port {port} within {timeout:g} s")


def redis_server_args(port: int, directory: Path, *, appendonly: bool, cluster: bool) -> list[str]:
    """The command line of a redis-server on loopback ``port`` keeping its files (log, AOF with every write
    fsynced, cluster state) in ``directory``; no RDB snapshots."""
    args = [
        tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
        "--logfile", str(directory / "redis.log"),
    ]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf")]
    return args


class RedisNode:
    """One cluster-enabled redis-server in its own directory."""

    def __init__(self, directory: Path, *, appendonly: bool, node_timeout_ms: int) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = [
            *redis_server_args(self.port, directory, appendonly=appendonly, cluster=True),
            "--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "no",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisNode:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, f"redis-server on port {self.port} (log: {self.directory})")
        return self

    def cli(self, *args: str) -> str:
        """``redis-cli -p PORT ARGS``'s output."""
        return subprocess.run([tool("redis-cli"), "-p", str(self.port), *args], capture_output=True, text=True,
                              timeout=10, check=False).stdout

    def pause(self, paused: bool = True) -> None:
        """SIGSTOP (a node that stops answering, its connections open) or, with False, SIGCONT."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save."""
        stop_process(self.process, kill=True)
        self.process = None

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


class RedisShards:
    """``masters`` shards of a Redis Cluster, each a master with ``replicas`` replicas."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 1, appendonly: bool = False,
                 node_timeout_ms: int = 1000) -> None:
        count = masters * (1 + replicas)
        self.nodes = [RedisNode(directory / f"redis{i}", appendonly=appendonly, node_timeout_ms=node_timeout_ms)
                      for i in range(count)]
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms

    def url(self, replicas: int = 0) -> str:
        """The store URL (``?replicas=N``: writes wait for N replicas)."""
        return f"redis-cluster://{self.nodes[0].address}" + (f"?replicas={replicas}" if replicas else "")

    def start(self) -> RedisShards:
        for node in self.nodes:
            node.start()
        create = [tool("redis-cli"), "--cluster", "create", *[n.address for n in self.nodes],
                  "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise ClusterError(f"redis-cli --cluster create failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
        self.wait_until(self.settled, "every shard to have a master and its replicas in sync")
        return self

    def roles(self) -> dict[int, tuple[str, int | None]]:
        """Each live node's port → (role, its master's port for a replica), from ``CLUSTER NODES``."""
        live = next((n for n in self.nodes if n.process is not None), None)
        if live is None:
            return {}
        ids: dict[str, int] = {}
        rows = [line.split() for line in live.cli("cluster", "nodes").splitlines() if line.strip()]
        for row in rows:
            ids[row[0]] = int(row[1].split("@")[0].rsplit(":", 1)[1])
        roles: dict[int, tuple[str, int | None]] = {}
        for row in rows:
            flags, master = row[2].split(","), row[3]
            if "fail" in flags or "fail?" in flags or "noaddr" in flags:
                continue
            role = "master" if "master" in flags else "replica"
            roles[ids[row[0]]] = (role, ids[master] if master != "-" and master in ids else None)
        return roles

    def master_nodes(self) -> list[RedisNode]:
        """The nodes that are masters now (of a slot range)."""
        roles = self.roles()
        return [n for n in self.nodes if n.process is not None and roles.get(n.port, ("", None))[0] == "master"]

    def settled(self) -> bool:
        """Every node up and in its place: ``masters`` masters, each with ``replicas`` replicas in sync."""
        if any(n.process is None for n in self.nodes):
            return False
        if "cluster_state:ok" not in self.nodes[0].cli("cluster", "info"):
            return False
        roles = self.roles()
        masters = [port for port, (role, _) in roles.items() if role == "master"]
        if len(masters) != self.masters or len(roles) != len(self.nodes):
            return False
        return all("master_link_status:up" in node.cli("info", "replication") for node in self.nodes
                   if roles[node.port][0] == "replica")

    def replica_of(self, master: RedisNode) -> RedisNode:
        """A replica of ``master`` (a live node)."""
        roles = self.roles()
        return next(n for n in self.nodes if roles.get(n.port) == ("replica", master.port))

    def serving(self) -> bool:
        """Whether every slot has a live master (after a failover too)."""
        live = next((n for n in self.nodes if n.process is not None), None)
        return (live is not None and len(self.master_nodes()) == self.masters
                and "cluster_state:ok" in live.cli("cluster", "info"))

    def kill_master(self, index: int = 0) -> RedisNode:
        """SIGKILL the ``index``-th master; returns it once another node took its slots."""
        victim = self.master_nodes()[index]
        victim.kill()
        self.wait_until(self.serving, "a replica to take over")
        return victim

    def restart(self, node: RedisNode) -> None:
        """Start a killed node again and wait until it is a replica in sync (or the cluster is whole again)."""
        node.start()
        self.wait_until(self.settled, f"node {node.address} to rejoin")

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise ClusterError(f"timed out after {timeout:g} s waiting for {what}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
