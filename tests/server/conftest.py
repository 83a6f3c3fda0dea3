"""Real server processes for the server tests, on free loopback ports."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``rnnstream serve ...`` in a subprocess; ``url`` once it answers ready."""

    def __init__(self, *args: str) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.args = ["--port", str(self.port), "--grpc-port", str(self.grpc_port), *args]
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rnnstream", "serve", *self.args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stdout.read() if self.process.stdout else ''}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server on port {self.port} was not ready within {timeout} s")

    def terminate_after(self, seconds: float) -> threading.Thread:
        """Send SIGTERM ``seconds`` from now, from a thread (the caller drives the load meanwhile)."""
        process = self.process
        assert process is not None

        def terminate() -> None:
            time.sleep(seconds)
            process.terminate()

        thread = threading.Thread(target=terminate)
        thread.start()
        return thread

    def stop(self, sig: int | None = None) -> int:
        if self.process is None:
            return 0
        if sig is None:
            self.process.terminate()
        else:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """The seed model and the identity model, memory store, a small body limit to test 413."""
    process = ServerProcess("seed", "builtin:identity", "--max-body-bytes", "100000").start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def demo_server() -> Iterator[ServerProcess]:
    """``rnnstream serve`` with no model: the bundled seed, text and co2 models; at most 12 generations at once,
    of at most 20,000 tokens each (long enough to still run while a test looks)."""
    process = ServerProcess("--max-generations", "12", "--max-tokens", "20000").start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def seed_token_server() -> Iterator[ServerProcess]:
    """Only the seed model, behind a bearer token (``s3cret``): the page must ask for it and say what is missing."""
    process = ServerProcess("seed", "--token", "s3cret").start()
    yield process
    process.stop()
