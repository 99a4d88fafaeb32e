"""``corral pipeline run|ls|status|cancel``: pipelines of jobs with artifacts and visible caching.

``--json`` prints the run as the API has it: ``{"id", "status", "steps": [{"name", "status", "cached",
"job_id", "reason", ...}]}``. ``run --wait`` and a failed or cancelled run exit 1, like ``corral submit
--wait`` for a job.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from corral.cli.options import AsJson, CommandContext
from corral.cli.render import format_age
from corral.client import Client
from corral.errors import CorralError
from corral.pipelines.status import PipelineRun

POLL_SECONDS = 0.5


def register(app: typer.Typer, shared: CommandContext) -> None:
    """Add ``corral pipeline`` to ``app``."""
    console, user_errors, connect = shared.console, shared.user_errors, shared.connect
    pipeline_app = typer.Typer(
        help="Pipelines: steps that are jobs, with artifacts and caching.", no_args_is_help=True
    )
    app.add_typer(pipeline_app, name="pipeline")

    @pipeline_app.command("run")
    def run(
        spec: Annotated[str, typer.Argument(help="Pipeline spec (YAML); see docs/pipelines.md.")],
        param: Annotated[
            list[str] | None, typer.Option("--param", "-p", help="k=v: a parameter's value for this run.")
        ] = None,
        wait: Annotated[
            bool, typer.Option(help="Wait until the run ends; exit 1 unless it succeeded.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    ) -> None:
        """Start a run: every step is a job in its queue; cached steps run no job and say why."""
        with user_errors(), connect() as client:
            started = client.run_pipeline(spec, _params(param or []))
            if not as_json:
                console.print(escape(f"pipeline run {started.id} ({started.name}) started"))
            finished = _wait(client, started) if wait else started
        _show(console, finished, as_json)
        if wait and finished.status != "succeeded":
            raise typer.Exit(1)

    @pipeline_app.command("ls")
    def list_runs(
        limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
        as_json: AsJson = False,
    ) -> None:
        """Pipeline runs, newest first: status, steps that ran and that were cache hits."""
        with user_errors(), connect() as client:
            runs = client.pipelines(limit)
        if as_json:
            console.print_json(json.dumps([r.model_dump(mode="json") for r in runs]))
            return
        table = Table("ID", "PIPELINE", "STATUS", "STEPS", "CACHED", "AGE", box=None)
        for r in runs:
            done = sum(1 for s in r.steps if s.status == "succeeded")
            cached = sum(1 for s in r.steps if s.cached)
            age = format_age(time.time() - r.created_at)
            table.add_row(r.id, r.name, r.status, f"{done}/{len(r.steps)}", str(cached), age)
        console.print(table)

    @pipeline_app.command("status")
    def status(
        run_id: Annotated[str, typer.Argument(help="Pipeline run id (p-...).")],
        as_json: AsJson = False,
    ) -> None:
        """Each step: status, cache hit or miss and why, its job, why it waits or failed."""
        with user_errors(), connect() as client:
            found = client.pipeline(run_id)
        _show(console, found, as_json)

    @pipeline_app.command("cancel")
    def cancel(
        run_id: Annotated[str, typer.Argument(help="Pipeline run id (p-...).")],
        as_json: AsJson = False,
    ) -> None:
        """Cancel the run's running steps and start no more."""
        with user_errors(), connect() as client:
            found = client.cancel_pipeline(run_id)
        _show(console, found, as_json)


def _params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise CorralError(f"--param {pair!r}: write NAME=VALUE")
        if name in params:
            raise CorralError(f"--param {name} is given twice")
        params[name] = value
    return params


def _wait(client: Client, run: PipelineRun) -> PipelineRun:
    while run.status == "running":
        time.sleep(POLL_SECONDS)
        run = client.pipeline(run.id)
    return run


def _show(console: Console, run: PipelineRun, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(run.model_dump(mode="json")))
        return
    console.print(escape(f"{run.id} {run.name}: {run.status}" + (f" ({run.reason})" if run.reason else "")))
    table = Table("STEP", "STATUS", "CACHED", "JOB", "REASON", box=None)
    for step in run.steps:
        table.add_row(
            escape(step.name),
            step.status,
            "yes" if step.cached else "",
            step.job_id or "",
            escape(step.reason or ""),
        )
    console.print(table)
