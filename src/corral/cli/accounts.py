"""Admin commands over the API: ``corral queues``, ``cohorts``, ``tenants``, ``users``, ``tokens``,
``whoami``. Thin, like the job verbs: parse, call ``corral.client.Client``, render."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from corral.cli.options import AsJson, CommandContext
from corral.errors import CorralError, SpecError
from corral.spec.job import parse_seconds


def register(app: typer.Typer, shared: CommandContext) -> None:
    """Add the admin commands to ``app``."""
    console, user_errors, connect = shared.console, shared.user_errors, shared.connect
    queues_app = typer.Typer(help="Queues: quota per flavor, cohort, who may submit.")
    tenants_app = typer.Typer(help="Tenants (teams) that own jobs.", no_args_is_help=True)
    users_app = typer.Typer(help="Users, each in a tenant with a role.", no_args_is_help=True)
    tokens_app = typer.Typer(help="Your API tokens (admins: everyone's).", no_args_is_help=True)
    app.add_typer(queues_app, name="queues")
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")

    @queues_app.callback(invoke_without_command=True)
    def queues(context: typer.Context, as_json: AsJson = False) -> None:
        """List queues with their quota and how many jobs wait and run in each."""
        if context.invoked_subcommand is not None:
            return
        with user_errors(), connect() as client:
            states = client.queues()
        if as_json:
            console.print_json(json.dumps([state.model_dump() for state in states]))
            return
        table = Table(
            "queue", "cohort", "quota (GPUs)", "borrowing limit", "weight", "tenants", "pending", "running"
        )
        for state in states:
            table.add_row(
                state.name + ("" if state.yours else " [dim](not yours)[/]"),
                state.cohort or "",
                _flavors(state.quota) if state.quota is not None else "none (any idle GPU)",
                _flavors(state.borrowing_limit or {}),
                f"{state.weight:g}",
                ", ".join(state.tenants) if state.tenants is not None else "all",
                str(state.pending),
                str(state.running),
            )
        console.print(table)

    @queues_app.command("apply")
    def apply_queues(
        path: Annotated[Path, typer.Argument(help="YAML: one queue, or a list under `queues:`.")],
    ) -> None:
        """Create or update queues from a file (admins); fields as in the cluster file's `queues:`, plus
        `tenants`."""
        with user_errors(), connect() as client:
            for queue in _read_queues(path):
                client.put_queue(queue)
                console.print(f"queue {queue['name']} applied")

    @queues_app.command("rm")
    def remove_queue(name: Annotated[str, typer.Argument(help="Queue name.")]) -> None:
        """Delete a queue (admins); refused while jobs use it."""
        with user_errors(), connect() as client:
            client.delete_queue(name)
        console.print(f"queue {name} deleted")

    @app.command()
    def cohorts() -> None:
        """Cohorts: queues that lend each other idle quota."""
        with user_errors(), connect() as client:
            found = client.cohorts()
        table = Table("cohort", "queues", "quota (GPUs)")
        for cohort in found:
            table.add_row(cohort.name, ", ".join(cohort.queues), _flavors(cohort.quota))
        console.print(table)

    @tenants_app.command("add")
    def add_tenant(name: Annotated[str, typer.Argument(help="Tenant name (lowercase, digits, -).")]) -> None:
        with user_errors(), connect() as client:
            client.create_tenant(name)
        console.print(f"tenant {name} created")

    @tenants_app.command("ls")
    def list_tenants() -> None:
        with user_errors(), connect() as client:
            for name in client.tenants():
                console.print(name)

    @users_app.command("add")
    def add_user(
        name: Annotated[str, typer.Argument(help="User name.")],
        tenant: Annotated[str, typer.Option(help="The user's tenant.")],
        role: Annotated[str, typer.Option(help="admin, member, viewer or agent.")] = "member",
        node: Annotated[
            str | None, typer.Option(help="Agents: the one node its tokens may speak for.")
        ] = None,
        expires_in: Annotated[
            str | None, typer.Option(help="The token expires after this long (30d, 12h); default: never.")
        ] = None,
    ) -> None:
        """Create a user and print their first token (shown once)."""
        with user_errors(), connect() as client:
            created = client.create_user(name, tenant, role, node=node, expires_in=_seconds(expires_in))
        console.print(f"user {created.user} created; token (shown once):")
        print(created.token)

    @users_app.command("ls")
    def list_users() -> None:
        with user_errors(), connect() as client:
            found = client.users()
        table = Table("user", "tenant", "role", "node")
        for user in found:
            table.add_row(user.name, user.tenant, user.role, user.node or "")
        console.print(table)

    @tokens_app.command("new")
    def new_token(
        user: Annotated[str | None, typer.Option(help="Admins: make it for this user.")] = None,
        expires_in: Annotated[
            str | None, typer.Option(help="It expires after this long (30d, 12h); default: never.")
        ] = None,
    ) -> None:
        """Make a token (to rotate: make a new one, then revoke the old). An agent's token speaks for the
        agent's node."""
        with user_errors(), connect() as client:
            print(client.create_token(user, expires_in=_seconds(expires_in)).token)

    @tokens_app.command("ls")
    def list_tokens() -> None:
        with user_errors(), connect() as client:
            found = client.tokens()
        table = Table("id", "user", "created", "expires")
        for token in found:
            expires = f"{token.expires_at:.0f}" if token.expires_at is not None else "never"
            table.add_row(token.id, token.user, f"{token.created_at:.0f}", expires)
        console.print(table)

    @tokens_app.command("revoke")
    def revoke_token(
        token_id: Annotated[str, typer.Argument(help="The token's id (corral_<id>_...).")],
    ) -> None:
        with user_errors(), connect() as client:
            client.revoke_token(token_id)
        console.print(f"token {token_id} revoked")

    @app.command()
    def cost(
        days: Annotated[float, typer.Option(help="Over the last this many days.")] = 30.0,
        by: Annotated[str, typer.Option(help="tenant, queue or cluster.")] = "tenant",
        as_json: AsJson = False,
    ) -> None:
        """What GPUs cost: allocated GPU-hours x each pool's price (members: their tenant only)."""
        until = time.time()
        with user_errors(), connect() as client:
            found = client.cost(since=until - days * 86400, until=until, by=by)
        if as_json:
            console.print_json(json.dumps([spend.model_dump() for spend in found]))
            return
        table = Table(by, "GPU-hours", "USD", title=f"GPU cost, last {days:g} days", title_justify="left")
        for spend in found:
            table.add_row(spend.key, f"{spend.gpu_hours:.2f}", f"{spend.usd:.2f}")
        console.print(table)

    @app.command()
    def whoami() -> None:
        """The user, tenant and role of the token in use."""
        with user_errors(), connect() as client:
            me = client.me()
        console.print(escape(f"{me.user} ({me.role}) in tenant {me.tenant} at {client.url}"))


def _seconds(duration: str | None) -> float | None:
    """``--expires-in`` as seconds: 30d, 12h, 90m, 1h30m or a number of seconds."""
    if duration is None:
        return None
    try:
        return parse_seconds(duration)
    except ValueError as error:
        raise CorralError(f"--expires-in {duration}: {error}") from None


def _flavors(gpus: dict[str, float]) -> str:
    return ", ".join(f"{flavor}={count:g}" for flavor, count in gpus.items())


def _read_queues(path: Path) -> list[dict[str, Any]]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SpecError(str(error), path=str(path)) from None
    queues = document["queues"] if isinstance(document, dict) and "queues" in document else document
    queues = queues if isinstance(queues, list) else [queues]
    if not all(isinstance(q, dict) and "name" in q for q in queues):
        raise SpecError(
            "expected a queue (a mapping with a name) or a list of them under `queues:`", path=str(path)
        )
    return queues
