"""Which server the CLI talks to: the global ``--url`` option, else ``CORRAL_URL``, else the default
(``corral up``'s), with the token from ``CORRAL_TOKEN`` or the default data directory."""

from __future__ import annotations

from dataclasses import dataclass

from corral.client import Client


@dataclass
class Connection:
    """The server of this invocation: the global options set ``url`` before any command runs, and every
    command that calls the server asks ``client`` for one."""

    url: str | None = None
    debug: bool = False
    """``--debug``: an unexpected error shows its traceback."""

    def client(self, url: str | None = None, timeout: float = 30.0) -> Client:
        """A client for ``url`` when a command names its own server (``corral agent --server``), else for
        the global option's."""
        return Client(url or self.url, timeout=timeout)
