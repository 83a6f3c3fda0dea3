"""free_port: loopback ports for servers this process starts."""

from __future__ import annotations

import socket

from rnnstream.cluster.redis_nodes import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Each port stays free until its server binds it, so picks made one after another must differ on their own:
    500 random picks among 35,536 ports would repeat one 97% of the time. A server's HTTP and gRPC ports once
    did, and the server could not bind its second."""
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port <= 55535 for port in ports)
    with socket.socket() as s:  # and each was free: the last one binds
        s.bind(("127.0.0.1", ports[-1]))
