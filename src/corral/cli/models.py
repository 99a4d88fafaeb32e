"""``corral models``: the model registry of your tenant (MLflow's, behind corral's server).

``register`` makes a version from a job's run, ``ls`` and ``show`` list models, versions, aliases and
lineage, ``alias NAME@ALIAS VERSION`` moves an alias (what serving follows). See docs/mlops.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from corral.cli.options import CommandContext
from corral.errors import CorralError


def register(app: typer.Typer, shared: CommandContext) -> None:
    """Add ``corral models`` to ``app``."""
    console, user_errors, connect = shared.console, shared.user_errors, shared.connect
    models_app = typer.Typer(help="Registered models: versions, aliases, lineage.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    def show_json(document: Any) -> None:
        console.print_json(json.dumps(document))

    @models_app.command("register")
    def register_model(
        job_id: Annotated[str, typer.Argument(help="The job whose MLflow run holds the model.")],
        path: Annotated[str, typer.Argument(help="The model's artifact path in the run, e.g. model.")],
        name: Annotated[str, typer.Option(help="The registered model (a new version of it).")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the version as JSON.")] = False,
    ) -> None:
        """Register artifact PATH of job JOB_ID's run as a new version of model NAME."""
        with user_errors(), connect() as client:
            version = client.register_model(job_id, path, name)
        if as_json:
            show_json(version)
            return
        console.print(escape(f"{version['name']} version {version['version']} <- {version['source']}"))

    @models_app.command("ls")
    def list_models(
        as_json: Annotated[bool, typer.Option("--json", help="Print the models as JSON.")] = False,
    ) -> None:
        """Your tenant's registered models."""
        with user_errors(), connect() as client:
            models = client.models()
        if as_json:
            show_json(models)
            return
        table = Table("name", "latest", "aliases", "updated")
        for model in models:
            aliases = ", ".join(f"{a}->{v}" for a, v in sorted(model["aliases"].items()))
            table.add_row(
                escape(model["name"]),
                str(model["latest_version"] or "-"),
                escape(aliases),
                _when(model["updated_at"]),
            )
        console.print(table)

    @models_app.command("show")
    def show_model(
        name: Annotated[str, typer.Argument(help="Model name.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the model as JSON.")] = False,
    ) -> None:
        """A model's versions, aliases and lineage (job, pipeline run and step, code, inputs)."""
        with user_errors(), connect() as client:
            model = client.model(name)
        if as_json:
            show_json(model)
            return
        aliases = ", ".join(f"{a}->{v}" for a, v in sorted(model["aliases"].items())) or "none"
        console.print(escape(f"{model['name']}: aliases {aliases}"))
        table = Table("version", "aliases", "job", "pipeline", "code", "inputs", "created")
        for version in model["versions"]:
            lineage = version["lineage"]
            pipeline = "/".join(filter(None, (lineage.get("pipeline_run"), lineage.get("pipeline_step"))))
            inputs = ", ".join(i["name"] for i in lineage.get("inputs", []))
            table.add_row(
                str(version["version"]),
                escape(", ".join(version["aliases"])),
                escape(lineage.get("job", "-")),
                escape(pipeline or "-"),
                escape((lineage.get("code") or "-")[:19]),
                escape(inputs or "-"),
                _when(version["created_at"]),
            )
        console.print(table)

    @models_app.command("alias")
    def move_alias(
        target: Annotated[str, typer.Argument(help="NAME@ALIAS, e.g. iris@champion.")],
        version: Annotated[int, typer.Argument(help="The version the alias points at from now on.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the model as JSON.")] = False,
    ) -> None:
        """Point NAME@ALIAS at VERSION, in one transaction: serving follows the alias."""
        with user_errors():
            name, at, alias = target.partition("@")
            if not (name and at and alias):
                raise CorralError(f"{target!r}: write NAME@ALIAS, e.g. iris@champion")
            with connect() as client:
                model = client.set_model_alias(name, alias, version)
        if as_json:
            show_json(model)
            return
        console.print(escape(f"{name}@{alias} -> version {version}"))


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
