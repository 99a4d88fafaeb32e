"""``corral artifacts push``: copy a job's model or checkpoint to a cluster's object store.

A refusal by the artifact rule is the answer "no", not a usage error: it exits 1 with the server's
message, as ``corral check`` does for a violated invariant; other errors exit 2 like every command.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from corral.cli.options import CommandContext
from corral.cli.render import print_error
from corral.client import APIError
from corral.federation.artifacts import ArtifactKind


def register(app: typer.Typer, shared: CommandContext) -> None:
    """Add ``corral artifacts`` to ``app``."""
    console, user_errors, connect = shared.console, shared.user_errors, shared.connect
    artifacts_app = typer.Typer(help="A job's artifacts in clusters' object stores.", no_args_is_help=True)
    app.add_typer(artifacts_app, name="artifacts")
    errors = Console(stderr=True, soft_wrap=True)

    @artifacts_app.command("push")
    def push(
        job_id: Annotated[str, typer.Argument(help="Job id.")],
        path: Annotated[
            str,
            typer.Argument(help="On the server's machine: in the job's working or checkpoint directory."),
        ],
        kind: Annotated[
            ArtifactKind, typer.Option(help="What it is; public clusters take models and checkpoints.")
        ],
        cluster: Annotated[str, typer.Option(help="The cluster whose object store receives it.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Copy a job's file or directory to a cluster's object store. Public clusters take only models
        and checkpoints of jobs that are not sensitive; a refusal exits 1 and says what may go."""
        with user_errors(), connect() as client:
            try:
                artifact = client.push_artifact(job_id, path, kind=kind, cluster=cluster)
            except APIError as error:
                if error.status != 403:
                    raise
                print_error(errors, error.detail)
                raise typer.Exit(1) from None
        if as_json:
            console.print_json(json.dumps(artifact.model_dump()))
            return
        console.print(escape(f"{artifact.name} ({artifact.kind}, {artifact.size} bytes) -> {artifact.url}"))
