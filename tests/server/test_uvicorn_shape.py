"""The start-up check of what rnnstream's protocols rely on of uvicorn's."""

from __future__ import annotations

from rnnstream.server import protocol, ws_protocol
from rnnstream.server.protocol import InferCycle
from rnnstream.server.uvicorn_shape import Reliance, missing


class Cycle:
    def __init__(self) -> None:
        self.body = b""
        self.more_body = False


class Protocol:
    """A class of the shape the check reads: attributes assigned in methods, read through ``self.cycle``."""

    def __init__(self) -> None:
        self.cycle = Cycle()
        self.transport = None
        self.ready = False

    def on_body(self) -> None:
        self.cycle.body += b"x"
        self.ready = self.cycle.more_body  # a read of an attribute the provided cycle is not said to have


def test_the_installed_uvicorn_has_everything_the_protocols_rely_on() -> None:
    assert protocol.missing_hooks() == []
    assert ws_protocol.missing_hooks() == []


def test_what_is_missing_is_named() -> None:
    reliance = Reliance(Protocol, methods=("on_body", "on_url"), attributes=("transport", "flow"),
                        provided={"cycle": ("body",)})
    assert missing(reliance) == ["Protocol.on_url()", "Protocol.flow", "Protocol.cycle.more_body (read by uvicorn)"]


def test_an_infer_cycle_has_every_attribute_uvicorn_reads_of_a_cycle() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert missing(Reliance(HttpToolsProtocol, provided={"cycle": InferCycle.__slots__})) == []
    assert missing(Reliance(HttpToolsProtocol, provided={"cycle": ("body",)}))  # it reads more than the body
