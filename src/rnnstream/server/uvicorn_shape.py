"""What rnnstream's HTTP and WebSocket protocols rely on of uvicorn's, checked at start-up.

:class:`~rnnstream.server.protocol.InferProtocol` and :class:`~rnnstream.server.ws_protocol.DrainingWebSocket`
subclass uvicorn's protocols, which are not a public API. So each names what it relies on — the methods it
overrides or calls, the attributes it reads or writes, and the attributes uvicorn's code reads of an object
it hands uvicorn (the request cycle) — and before serving, :func:`missing` reads the installed uvicorn's
source with ``ast`` and says what is not there. ``rnnstream serve`` then falls back to uvicorn's own
protocol, with a warning, instead of failing in a transport callback at run time. The package pins
uvicorn to the range this was tested on (pyproject.toml).

>>> from uvicorn.server import ServerState
>>> missing(Reliance(ServerState, attributes=("total_requests", "default_headers")))
[]
>>> missing(Reliance(ServerState, methods=("serve",), attributes=("requests_total",)))
['ServerState.serve()', 'ServerState.requests_total']
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reliance:
    """What a subclass relies on of uvicorn's class ``base``: ``methods`` it overrides or calls,
    ``attributes`` of an instance it reads or writes, and for an attribute that the subclass fills with an
    object of its own (``provided``: attribute → that object's attributes), every attribute ``base`` reads
    of it must be one the object has."""

    base: type
    methods: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    provided: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def missing(reliance: Reliance) -> list[str]:
    """What ``reliance.base`` (as installed) lacks of what is relied on; empty when all is there."""
    name = reliance.base.__name__
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(reliance.base)))
    except (OSError, TypeError, SyntaxError):
        return [f"the source of {name}"]
    assigned, reads = _attributes(tree)
    lacking = [f"{name}.{m}()" for m in reliance.methods if not callable(getattr(reliance.base, m, None))]
    lacking += [f"{name}.{a}" for a in reliance.attributes if a not in assigned and not hasattr(reliance.base, a)]
    for attribute, has in reliance.provided.items():
        lacking += [f"{name}.{attribute}.{a} (read by uvicorn)" for a in sorted(reads.get(attribute, set()) - set(has))]
    return lacking


def _attributes(tree: ast.AST) -> tuple[set[str], dict[str, set[str]]]:
    """The attributes assigned to ``self`` anywhere in the class, and for each ``self.x``, the attributes
    read or written of it (``self.x.y``)."""
    assigned: set[str] = set()
    reads: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if isinstance(node.value, ast.Name) and node.value.id == "self" and isinstance(node.ctx, ast.Store):
            assigned.add(node.attr)
        inner = node.value
        if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) and inner.value.id == "self":
            reads.setdefault(inner.attr, set()).add(node.attr)
    return assigned, reads
