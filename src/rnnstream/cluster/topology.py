"""The deployment on one machine: HAProxy → ``rnnstream serve`` replicas → a Redis Cluster with replicas.

``Topology(directory, ...).start()`` starts the Redis shards (``redis_nodes``), the replicas (each
``rnnstream serve MODEL --store redis-cluster://...``) and HAProxy (``haproxy``) in front of them; ``url``
is HAProxy's. ``rnnstream cluster-demo`` runs it until Ctrl-C; the fault test kills and restarts its parts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rnnstream.cluster.haproxy import HAProxy
from rnnstream.cluster.redis_nodes import ClusterError, RedisShards, free_port


def is_ready(url: str) -> bool:
    """Whether ``url``/v2/health/ready answers 200."""
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class Replica:
    """One ``rnnstream serve`` process on a fixed port (a restart takes the same one: HAProxy knows it)."""

    def __init__(self, directory: Path, model: str, store: str, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log = directory / f"replica-{self.port}.log"
        self.args = [sys.executable, "-m", "rnnstream", "serve", model, "--store", store, "--host", "127.0.0.1",
                     "--port", str(self.port), "--grpc-port", "0", *extra]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ClusterError(f"replica on port {self.port} exited; its log: {self.log}")
            if is_ready(self.url):
                return
            time.sleep(0.1)
        raise ClusterError(f"replica on port {self.port} was not ready within {timeout:g} s; its log: {self.log}")

    def signal(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` (SIGTERM drains; SIGKILL does not) and wait for the process to end; its exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code


@dataclass
class Topology:
    """HAProxy round-robin over ``replicas`` servers of ``model`` sharing a Redis Cluster of ``masters`` shards
    with ``redis_replicas`` replicas each; the store URL asks writes to wait for ``durable`` replicas."""

    directory: Path
    model: str = "seed"
    replicas: int = 3
    masters: int = 3
    redis_replicas: int = 1
    durable: int = 1
    port: int = 0
    serve_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redis = RedisShards(self.directory, masters=self.masters, replicas=self.redis_replicas)
        self.servers: list[Replica] = []
        self.haproxy: HAProxy | None = None

    @property
    def store(self) -> str:
        return self.redis.url(self.durable)

    @property
    def url(self) -> str:
        """HAProxy's address (HTTP and WebSocket)."""
        if self.haproxy is None:
            raise ClusterError("the topology is not started")
        return self.haproxy.url

    def start(self) -> Topology:
        try:
            self.redis.start()
            self.servers = [Replica(self.directory, self.model, self.store, self.serve_args).start()
                            for _ in range(self.replicas)]
            for server in self.servers:
                server.wait_ready()
            self.haproxy = HAProxy(self.directory, self.port or free_port(), [s.port for s in self.servers],
                                   free_port()).start()
            self.wait_in_pool(self.servers)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_in_pool(self, servers: list[Replica], timeout: float = 30.0) -> None:
        """Wait until HAProxy counts ``servers`` up (its health checks passed twice)."""
        if self.haproxy is None:
            return
        names = {f"r{self.servers.index(s)}" for s in servers}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.haproxy.stats_port}/;csv", timeout=2) as reply:
                rows = [line.split(",") for line in reply.read().decode().splitlines()]
            up = {row[1] for row in rows if len(row) > 17 and row[0] == "replicas" and row[17] == "UP"}
            if names <= up:
                return
            time.sleep(0.1)
        raise ClusterError(f"HAProxy did not count {sorted(names)} up within {timeout:g} s")

    def restart(self, server: Replica) -> None:
        """Start a stopped replica again and wait until HAProxy sends it requests."""
        server.start().wait_ready()
        self.wait_in_pool([server])

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for server in self.servers:
            server.signal(signal.SIGTERM)
        self.redis.stop()

    def describe(self) -> str:
        """What runs where, for a person."""
        lines = [f"HAProxy        {self.url} (round-robin, HTTP and WebSocket; statistics: "
                 f"http://127.0.0.1:{self.haproxy.stats_port if self.haproxy else 0}/)"]
        lines += [f"replica        {s.url} (log {s.log})" for s in self.servers]
        roles = self.redis.roles()
        for node in self.redis.nodes:
            role, master = roles.get(node.port, ("down", None))
            lines.append(f"redis {role:<8} {node.address}" + (f" (of 127.0.0.1:{master})" if master else ""))
        lines.append(f"store          {self.store}")
        return "\n".join(lines)


def run_demo(directory: Path, model: str, durable: int, port: int) -> int:
    """``rnnstream cluster-demo``: start the topology, print it and a request to paste, wait for Ctrl-C."""
    topology = Topology(directory, model=model, durable=durable, port=port)
    print(f"starting 6 redis-server (3 masters, 1 replica each), 3 replicas of {model!r} and HAProxy in {directory}",
          flush=True)
    topology.start()
    try:  # Ctrl-C before the signals are blocked ends the wait too
        print(topology.describe())
        if model == "seed":
            body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}],
                    "parameters": {"sequence_id": "demo-1", "sequence_start": True, "sequence_step": 1}}
            print(f"Try: curl -s {topology.url}/v2/models/seed/infer -H 'Content-Type: application/json' "
                  f"-d '{json.dumps(body)}'")
        print(f"Models and their inputs: {topology.url}/v2/models (and /v2/models/NAME)")
        print("Ctrl-C stops everything.", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # after the children started
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        topology.stop()
    return 0
