"""``corral serve FILE`` and ``corral services ls|status|promote|rm``: thin, like the job verbs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from corral.cli.options import AsJson, CommandContext
from corral.spec.service import load_service_spec


def register(app: typer.Typer, shared: CommandContext) -> None:
    """Add ``serve`` and the ``services`` group to ``app``."""
    console, user_errors, connect = shared.console, shared.user_errors, shared.connect
    services_app = typer.Typer(help="Services: replicas that scale with traffic, revisions, canaries.")
    app.add_typer(services_app, name="services")

    @app.command()
    def serve(
        path: Annotated[Path, typer.Argument(help="A service spec (type: service).")], as_json: AsJson = False
    ) -> None:
        """Create or change a service; prints its name, URL and revision (and, once, a public
        service's own token)."""
        with user_errors():
            spec = load_service_spec(path)
            with connect() as client:
                service = client.apply_service(spec)
        shown = {k: service[k] for k in ("name", "url", "revision")}
        if service.get("token"):
            shown["token"] = service["token"]
        if as_json:
            console.print_json(json.dumps(shown))
            return
        console.print(f"service {shown['name']} revision {shown['revision']}: {shown['url']}")
        if service.get("token"):
            console.print(f"its token (shown once; callers send it as a bearer token): {service['token']}")

    @services_app.command("ls")
    def list_services(as_json: AsJson = False) -> None:
        """Your tenant's services (admins: everyone's)."""
        with user_errors(), connect() as client:
            services = client.services()
        if as_json:
            console.print_json(json.dumps(services))
            return
        table = Table("service", "revision", "canary", "replicas (ready/all)", "url")
        for service in services:
            table.add_row(
                service["name"],
                str(service["stable"] or ""),
                str(service["canary"] or ""),
                _replicas(service),
                service["url"],
            )
        console.print(table)

    @services_app.command("status")
    def status(name: str, as_json: AsJson = False) -> None:
        """A service's revisions and replicas."""
        with user_errors(), connect() as client:
            service = client.service(name)
        if as_json:
            console.print_json(json.dumps(service))
            return
        console.print(
            f"{service['name']}: {service['url']}  replicas {_replicas(service)}, wanted {service['desired']}"
        )
        for revision in service["revisions"]:
            console.print(f"  revision {revision['number']}: {revision['state']}  {revision['reason'] or ''}")
        for replica in service["replicas"]:
            ready = "ready" if replica["ready"] else replica["status"]
            where = f" on {replica['node']} at {replica['url']}" if replica.get("node") else ""
            line = f"  replica {replica['job_id']} (revision {replica['revision']}){where}: {ready}"
            console.print(escape(line))  # an IPv6 address's brackets are not markup

    @services_app.command("promote")
    def promote(name: str, as_json: AsJson = False) -> None:
        """Give the canary revision all the traffic now."""
        with user_errors(), connect() as client:
            service = client.promote_service(name)
        if as_json:
            console.print_json(json.dumps(service))
            return
        console.print(f"{name}: revision {service['stable']} takes all the traffic")

    @services_app.command("rm")
    def remove(name: str, as_json: AsJson = False) -> None:
        """Remove a service and stop its replicas."""
        with user_errors(), connect() as client:
            client.remove_service(name)
        if as_json:
            console.print_json(json.dumps({"removed": name}))
            return
        console.print(f"removed {name}")


def _replicas(service: dict[str, Any]) -> str:
    replicas = service["replicas"]
    return f"{sum(1 for r in replicas if r['ready'])}/{len(replicas)}"
