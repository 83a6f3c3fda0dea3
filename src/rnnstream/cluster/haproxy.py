"""HAProxy in front of ``rnnstream serve`` replicas: round-robin over HTTP and WebSocket, health from
``/v2/health/ready``.

A replica leaves the pool when its readiness check fails (503 while it starts or drains; connection
refused once it stopped listening on SIGTERM or died) and comes back when it passes twice. A request
whose connection to a replica could not be opened goes to another one (``retry-on conn-failure``,
``option redispatch``): it never reached a replica, so sending it again is always safe. HAProxy retries
nothing else: a reply lost after a replica applied a step is the client's to retry, with
``sequence_step`` (exactly-once), since HAProxy cannot know whether the step was applied.

>>> print(config(8080, [8001, 8002]).split("\\nbackend replicas")[1].strip())
balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server inter 250ms fall 1 rise 2
    server r0 127.0.0.1:8001 check
    server r1 127.0.0.1:8002 check
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from rnnstream.cluster.redis_nodes import stop_process, tool, wait_for_port

TEMPLATE = """\
global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-keep-alive 10s
    retries 3
    retry-on conn-failure
    option redispatch 1

frontend rnnstream
    bind 127.0.0.1:{port}
    default_backend replicas

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /

backend replicas
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server inter 250ms fall 1 rise 2
{servers}
"""


def config(port: int, replicas: Sequence[int], stats_port: int = 0) -> str:
    """HAProxy's configuration: listen on ``port``, round-robin over the replicas on these loopback ports
    (its own statistics page on ``stats_port``)."""
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(replicas))
    return TEMPLATE.format(port=port, stats_port=stats_port, servers=servers)


class HAProxy:
    """``haproxy -db -f haproxy.cfg`` in ``directory``, listening on ``port``."""

    def __init__(self, directory: Path, port: int, replicas: Sequence[int], stats_port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "haproxy.cfg"
        self.path.write_text(config(port, replicas, stats_port))
        self.port, self.stats_port = port, stats_port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HAProxy:
        log = open(self.path.with_suffix(".log"), "wb")  # noqa: SIM115 (the process writes it until stopped)
        self.process = subprocess.Popen([tool("haproxy"), "-db", "-f", str(self.path)], stdout=log, stderr=log)
        log.close()
        wait_for_port(self.port, self.process, f"haproxy (log: {self.path.with_suffix('.log')})")
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
