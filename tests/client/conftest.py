"""Real ``rnnstream serve`` processes for the client's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.conftest import ServerProcess


@pytest.fixture(scope="session")
def client_server() -> Iterator[ServerProcess]:
    """The seed model (one input, one output), the CO₂ forecaster (two inputs) and the text model (token ids),
    memory store."""
    process = ServerProcess("seed", "co2", "text", "--grpc-port", "0").start()
    yield process
    process.stop()
