"""The network server: ``rnnstream serve``. See :mod:`rnnstream.server.app`.

Importing this package loads nothing of the server (Starlette, uvicorn): ``create_app`` and ``ServerConfig``
are loaded when first used, so the CLI can read the server's limits without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnstream.server.app import create_app
    from rnnstream.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from rnnstream.server.app import create_app

        return create_app
    if name == "ServerConfig":
        from rnnstream.server.config import ServerConfig

        return ServerConfig
    raise AttributeError(f"module 'rnnstream.server' has no attribute {name!r}")
