"""The network server: ``rnnstream serve``. See :mod:`rnnstream.server.app`."""

from rnnstream.server.app import create_app
from rnnstream.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
