"""A tested deployment on one machine: HAProxy in front of ``rnnstream serve`` replicas, state in a Redis
Cluster whose masters have replicas (``rnnstream cluster-demo``; docs/deployment.md)."""

from __future__ import annotations

from rnnstream.cluster.haproxy import HAProxy
from rnnstream.cluster.redis_nodes import ClusterError, RedisNode, RedisShards
from rnnstream.cluster.topology import Replica, Topology

__all__ = ["ClusterError", "HAProxy", "RedisNode", "RedisShards", "Replica", "Topology"]
