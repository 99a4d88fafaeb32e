"""What every command group shares: the entry point's console, error handling and connection, and options."""

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Console

from corral.client import Client

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
"""``--json``: print the API's document instead of a table, for scripts."""


@dataclass(frozen=True)
class CommandContext:
    """Handed by ``corral.cli.main`` to each group's ``register``, so every command reports errors and
    connects (``--url``, ``CORRAL_URL``, the saved login) the same way."""

    console: Console
    user_errors: Callable[[], AbstractContextManager[None]]
    """Turns corral's deliberate errors into one line and exit status 2."""
    connect: Callable[..., Client]
    """A client for the server the global options name."""
