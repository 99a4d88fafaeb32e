"""Control-plane commands: ``corral server`` and the job verbs (submit, ls, status, why, cancel).

The verbs are thin: they call ``corral.client.Client`` (``CORRAL_URL``, ``CORRAL_TOKEN``) and print a
Rich table, or JSON with ``--json`` for scripts.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Column, Table

from corral.api_models import Job, JobStatus
from corral.backends.pod_users import DEFAULT_POD_USER
from corral.cli.options import AsJson, CommandContext
from corral.cli.render import format_age, gpus_of, nodes_of, print_error
from corral.cli.watch import events_table, follow_logs, live_view, wait_for_end
from corral.client import APIError
from corral.errors import CorralError
from corral.limits import MAX_CPU
from corral.logs import DEFAULT_LOG_CAP
from corral.paths import TOKEN_FILE, closed_parents, default_data_dir, private_umask, secure_data_dir
from corral.spec.job import DEFAULT_STOP_GRACE

if TYPE_CHECKING:
    from corral.client import Client
    from corral.control.reconcile import Inventory

JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)

DEFAULT_PORT = 8765
DEFAULT_HEARTBEAT_TIMEOUT = 5.0
"""Agents heartbeat every second: five missed beats is a lost node, well inside the 10 s promise."""


PodUserOption = Annotated[
    str,
    typer.Option(
        help="Who pods run as when no corral-<tenant> user exists (made if missing when run as root); "
        "see docs/security.md."
    ),
]
"""``--pod-user`` of ``corral server``, ``up`` and ``agent``."""


def register(app: typer.Typer, shared: CommandContext) -> None:
    """Add the control-plane commands to ``app``."""
    console, user_errors, connect = shared.console, shared.user_errors, shared.connect
    errors = Console(stderr=True, soft_wrap=True)

    @app.command()
    def server(
        cluster: Annotated[
            Path | None,
            typer.Option(
                help="Cluster file (pools and queues); without one, the nodes are what agents register."
            ),
        ] = None,
        data_dir: Annotated[
            Path | None,
            typer.Option(
                help="Holds the SQLite database (default: ~/.local/share/corral; /var/lib/corral for root)."
            ),
        ] = None,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
        policy: Annotated[str, typer.Option(help="Scheduling policy (see `corral policies`).")] = "default",
        interval: Annotated[float, typer.Option(help="Seconds between reconcile rounds.")] = 2.0,
        workers: Annotated[
            int, typer.Option(min=1, help="API worker processes (more cores for requests); one loop.")
        ] = 1,
        local: Annotated[
            bool, typer.Option(help="Run pods as processes on this machine (the local backend).")
        ] = True,
        heartbeat_timeout: Annotated[
            float | None,
            typer.Option(
                help="A node whose agent is silent this long is down and its work requeued "
                f"(default with --no-local: {DEFAULT_HEARTBEAT_TIMEOUT:g} s; the local backend needs no agents; "
                "0: nodes are always up, e.g. to measure scheduling without agents)."
            ),
        ] = None,
        log_cap_mib: Annotated[
            int,
            typer.Option(min=1, help="MiB of each pod's output kept and served; older output is dropped."),
        ] = DEFAULT_LOG_CAP >> 20,
        pod_user: PodUserOption = DEFAULT_POD_USER,
        mlflow_artifacts: Annotated[
            str | None,
            typer.Option(
                help="Where MLflow keeps artifacts (s3://bucket/path; default <data dir>/mlartifacts)."
            ),
        ] = None,
    ) -> None:
        """Run the API and the reconcile loop (SQLite in --data-dir unless CORRAL_DATABASE_URL is set)."""
        from corral.control.reconcile import Inventory
        from corral.scenario.io import load_cluster_file

        with user_errors():
            cluster_file = load_cluster_file(cluster) if cluster is not None else None
        if heartbeat_timeout is None and not local:
            heartbeat_timeout = DEFAULT_HEARTBEAT_TIMEOUT
        elif heartbeat_timeout == 0:
            heartbeat_timeout = None
        if cluster_file is None:
            inventory = Inventory([], None, heartbeat_timeout)
        else:
            inventory = Inventory(cluster_file.clusters, cluster_file.queues, heartbeat_timeout)
        _serve(
            console,
            user_errors,
            inventory,
            data_dir,
            host=host,
            port=port,
            policy=policy,
            interval=interval,
            local=local,
            workers=workers,
            log_cap=log_cap_mib << 20,
            pod_user=pod_user,
            mlflow_artifacts=mlflow_artifacts,
        )

    @app.command()
    def up(
        data_dir: Annotated[
            Path | None,
            typer.Option(
                help="Holds the SQLite database and pods' output (default: ~/.local/share/corral; /var/lib/corral for root)."
            ),
        ] = None,
        port: Annotated[int, typer.Option(help="Port to listen on (loopback).")] = DEFAULT_PORT,
        gpus: Annotated[
            int | None,
            typer.Option(help="Declare this many GPUs instead of asking NVML (e.g. 4 on a laptop)."),
        ] = None,
        policy: Annotated[str, typer.Option(help="Scheduling policy (see `corral policies`).")] = "default",
        gpu_hour_cost: Annotated[
            float,
            typer.Option(min=0, help="USD per GPU-hour that `corral cost` charges tenants (0: not counted)."),
        ] = 0.0,
        pod_user: PodUserOption = DEFAULT_POD_USER,
    ) -> None:
        """Everything on this machine: API, reconcile loop and local backend, scheduling onto this machine's
        CPUs, memory and GPUs (found by NVML, or declared with --gpus)."""
        from corral.control.inventory import local_cluster
        from corral.control.reconcile import Inventory

        cluster = local_cluster(gpus, gpu_hour_cost=gpu_hour_cost)
        node = cluster.pools[0].node
        console.print(
            f"this machine: {node.cpu:g} CPUs, {node.memory_gib:g} GiB, {node.gpus} GPU(s) {node.gpu_model or ''}"
        )
        folder = (data_dir or default_data_dir()).resolve()
        console.print(
            escape(
                "the CLI finds it at the default port and data dir; elsewhere:\n"
                f"  export CORRAL_URL=http://127.0.0.1:{port}\n"
                f"  export CORRAL_TOKEN=$(cat {folder / TOKEN_FILE})"
            )
        )
        _serve(
            console,
            user_errors,
            Inventory([cluster]),
            data_dir,
            port=port,
            policy=policy,
            interval=1.0,
            pod_user=pod_user,
        )

    @app.command()
    def agent(
        node: Annotated[str | None, typer.Option(help="This node's name (default: the host name).")] = None,
        server: Annotated[
            str | None, typer.Option(help="Server URL (default: the global --url, else CORRAL_URL).")
        ] = None,
        data_dir: Annotated[Path | None, typer.Option(help="Where pods' output and state go.")] = None,
        interval: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 1.0,
        gpus: Annotated[
            int | None, typer.Option(help="Declare this many GPUs instead of asking NVML.")
        ] = None,
        gpu_model: Annotated[str, typer.Option(help="Model of declared GPUs.")] = "virtual",
        cluster: Annotated[str, typer.Option(help="Cluster this machine joins.")] = "agents",
        pool: Annotated[str | None, typer.Option(help="Pool (default: the GPU model).")] = None,
        flavor: Annotated[str | None, typer.Option(help="Quota flavor (default: the pool).")] = None,
        private: Annotated[bool, typer.Option(help="Owned hardware: may run sensitive work.")] = True,
        register: Annotated[
            bool, typer.Option(help="Register this machine's inventory (off: the cluster file declares it).")
        ] = True,
        pod_user: PodUserOption = DEFAULT_POD_USER,
        advertise_address: Annotated[
            str | None,
            typer.Option(
                help="Where the server's gateway reaches this node's service replicas, which listen "
                "there (default: the address the server sees this agent connect from; replicas then "
                "listen on every interface)."
            ),
        ] = None,
    ) -> None:
        """Register this machine's GPUs (NVML, or --gpus N), heartbeat, and run the pods the server
        assigns to this node."""
        from functools import partial

        from corral.backends.agent import Agent
        from corral.backends.pod_users import PodUsers, prepare_pod_user
        from corral.control.inventory import hostname, this_machine

        name = node or hostname()
        folder = data_dir or default_data_dir() / "agent" / name
        private_umask()
        for passed_through in [*reversed(folder.parents[: 2 if data_dir is None else 0]), folder]:
            secure_data_dir(passed_through)  # the default's parents too: pods pass through them
        console.print(prepare_pod_user(pod_user))
        machine = partial(
            this_machine, gpus, gpu_model, cluster=cluster, pool=pool, flavor=flavor, private=private
        )
        # Requests give up well inside the node-lost timeout, so a server that stopped answering is
        # noticed (and the pods stopped) in time.
        with connect(server, timeout=DEFAULT_HEARTBEAT_TIMEOUT / 2) as client:
            console.print(escape(f"corral agent for {name} -> {client.url} (pods in {folder})"))
            Agent(
                client,
                name,
                folder,
                machine if register else None,
                DEFAULT_HEARTBEAT_TIMEOUT,
                PodUsers(pod_user),
                advertise_address,
            ).run(interval)

    @app.command()
    def submit(
        spec: Annotated[
            str | None, typer.Argument(help="Job spec (YAML; - reads it from stdin); see docs/job-spec.md.")
        ] = None,
        spec_file: Annotated[
            str | None, typer.Option("--file", "-f", help="The job spec, as an option (kubectl's -f).")
        ] = None,
        key: Annotated[
            str | None, typer.Option(help="Idempotency key: a retry returns the same job.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
        wait: Annotated[
            bool, typer.Option(help="Wait until it ends, showing where it is; exit 1 if it fails.")
        ] = False,
    ) -> None:
        """Submit a job: corral submit job.yaml, corral submit -f job.yaml, or ... | corral submit -."""
        from corral.spec.job import load_job_spec, parse_job_spec

        with user_errors(), connect() as client:
            source = _one_spec(spec, spec_file)
            parsed = parse_job_spec(sys.stdin.read(), "<stdin>") if source == "-" else load_job_spec(source)
            base = Path.cwd() if source == "-" else Path(source).parent
            job = client.submit(client.ship_workdir(parsed, base), idempotency_key=key)
            if wait:
                job = wait_for_end(client, job, console, quiet=as_json)
        _print_jobs(console, [job], as_json, single=True)
        _exit_like(job, wait)

    @app.command("ls")
    def list_jobs(
        status: Annotated[
            str | None, typer.Option(help=f"Only jobs in this status: {', '.join(JOB_STATUSES)}.")
        ] = None,
        queue: Annotated[str | None, typer.Option(help="Only jobs of this queue.")] = None,
        limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
        as_json: AsJson = False,
    ) -> None:
        """List jobs, newest first: GPUs (per pod x pods), where they run and how long ago they came."""
        with user_errors(), connect() as client:
            if status is not None and status not in JOB_STATUSES:
                raise CorralError(f"--status {status!r}: choose one of {', '.join(JOB_STATUSES)}")
            jobs = client.jobs(status=status, queue=queue, limit=limit)
        _print_jobs(console, jobs, as_json)

    @app.command()
    def status(
        job_id: Annotated[str, typer.Argument(help="Job id.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
    ) -> None:
        """One job's status, and what happened to it (started, preempted, resumed ...)."""
        with user_errors(), connect() as client:
            job = client.job(job_id)
            events = [] if as_json else client.events(job_id)
        _print_jobs(console, [job], as_json, single=True)
        if not as_json:
            grace = float(job.spec.get("stop_grace_period", DEFAULT_STOP_GRACE))
            console.print(f"stopping: SIGTERM, then SIGKILL after {grace:g} s (stop_grace_period)")
        if events:
            console.print(events_table(events, job.submitted_at))

    @app.command()
    def logs(
        job_id: Annotated[str, typer.Argument(help="Job id.")],
        pod: Annotated[int, typer.Option(help="Which pod of the job.")] = 0,
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing new output until the job ends.")
        ] = False,
        tail: Annotated[int | None, typer.Option(min=0, help="Only the last this many lines.")] = None,
        attempt: Annotated[
            int | None, typer.Option(min=1, help="That run's output (1: the first), not the latest's.")
        ] = None,
    ) -> None:
        """Print a job's output (one pod, latest run or --attempt N); with -f, follow it (a resumed job's
        new attempt is announced and followed too); with --tail N, only its last N lines."""
        with user_errors(), connect() as client:
            if follow and attempt is not None:
                raise CorralError("--attempt shows one past run; --follow follows the latest: choose one")
            if not follow:
                part = client.log_range(job_id, pod, tail=tail, attempt=attempt)
                if part.truncated_before and part.start == part.truncated_before:
                    print(f"--- output before byte {part.truncated_before} was dropped ---", file=sys.stderr)
                print(part.text, end="" if part.text.endswith("\n") else "\n")
                return
            follow_logs(client, job_id, pod, tail)

    @app.command()
    def run(
        command: Annotated[list[str], typer.Argument(help="The command, after --.")],
        gpus: Annotated[str | None, typer.Option(help="2, 0.5, A100:2 ...")] = None,
        cpu: Annotated[float, typer.Option(min=0, max=MAX_CPU, help="CPU cores per pod.")] = 1.0,
        memory: Annotated[str, typer.Option(help="Memory per pod, e.g. 16GiB.")] = "4GiB",
        pods: Annotated[int, typer.Option(help="Pods started together.")] = 1,
        queue: Annotated[str, typer.Option(help="Queue.")] = "default",
        name: Annotated[
            str | None, typer.Option(help="Job name (default: from the command's first word).")
        ] = None,
        env: Annotated[
            list[str] | None, typer.Option(help="KEY=VALUE in the pods' environment. Repeatable.")
        ] = None,
        priority: Annotated[int, typer.Option(help="Higher goes first within its queue.")] = 0,
        time_limit: Annotated[
            str | None, typer.Option(help="Stopped after running this long, e.g. 90m (default 24h).")
        ] = None,
        workdir: Annotated[
            Path | None,
            typer.Option(
                help="A folder here to upload: each pod starts in a fresh copy of it (.gitignore "
                "and .corralignore matches left out)."
            ),
        ] = None,
        setup: Annotated[
            str | None,
            typer.Option(
                help="Shell commands run before the command, once per node (later pods start where it left off)."
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
        wait: Annotated[
            bool, typer.Option(help="Wait until it ends, showing where it is; exit 1 if it fails.")
        ] = False,
    ) -> None:
        """Submit a command as a job: corral run --gpus 1 -- python train.py (one quoted argument is run
        by the shell: corral run -- 'python a.py && python b.py')."""
        resources: dict[str, object] = {"cpu": cpu, "memory": memory}
        if gpus is not None:
            resources["gpus"] = gpus
        # One argument is a shell command line ('python a.py && python b.py'); several are an argv.
        line: str | list[str] = command[0] if len(command) == 1 else command
        body: dict[str, object] = {
            "name": name or job_name(command),
            "queue": queue,
            "command": line,
            "pods": pods,
            "resources": resources,
            "priority": priority,
        }
        if time_limit is not None:
            body["time_limit"] = time_limit
        if setup is not None:
            body["setup"] = setup
        with user_errors():
            body["env"] = _environment(env or [])
        with user_errors(), connect() as client:
            if workdir is not None:
                body["code"] = _upload(client, workdir)
            job = client.submit(body)
            if wait:
                job = wait_for_end(client, job, console, quiet=as_json)
        _print_jobs(console, [job], as_json, single=True)
        _exit_like(job, wait)

    nodes_app = typer.Typer(help="The nodes this control plane schedules onto.")
    app.add_typer(nodes_app, name="nodes")

    @nodes_app.command("rm")
    def remove_node(name: Annotated[str, typer.Argument(help="Node name.")]) -> None:
        """Forget a node's registration (admins); its running work is requeued. Revoke its agent's
        tokens first, or the agent registers it again."""
        with user_errors(), connect() as client:
            client.remove_node(name)
        console.print(f"node {name} removed")

    @nodes_app.callback(invoke_without_command=True)
    def nodes(context: typer.Context, as_json: AsJson = False) -> None:
        """The nodes this control plane schedules onto, and when each was last heard from."""
        if context.invoked_subcommand is not None:
            return
        with user_errors(), connect() as client:
            states = client.nodes()
        if as_json:
            console.print_json(json.dumps([state.model_dump() for state in states]))
            return
        table = Table("node", "cluster", "pool", "flavor", "GPUs used", "model", "drained", "last heartbeat")
        now = time.time()
        for state in states:
            heard = f"{now - state.last_heartbeat:.0f} s ago" if state.last_heartbeat is not None else "never"
            table.add_row(
                state.name,
                state.cluster,
                state.pool,
                state.flavor,
                f"{state.gpus_allocated:g}/{state.gpus}"
                + (f" (+{state.gpus_outside} outside corral)" if state.gpus_outside else ""),
                state.gpu_model or "",
                ", ".join(map(str, state.unhealthy_gpus)),
                heard,
            )
        console.print(table)

    @app.command()
    def top(
        interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
        once: Annotated[bool, typer.Option(help="Print one view and exit.")] = False,
    ) -> None:
        """A live view of GPUs per node, queues and the newest jobs (Ctrl-C to leave)."""
        with user_errors(), connect() as client, contextlib.suppress(KeyboardInterrupt):
            live_view(client, console, interval, once)

    @app.command()
    def why(
        job_id: Annotated[str, typer.Argument(help="Job id.")],
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON (with the forecast start and burst cost).")
        ] = False,
    ) -> None:
        """Why a job waits (or failed): the scheduler's explanation."""
        with user_errors(), connect() as client:
            answer = client.why(job_id)
        if as_json:
            console.print_json(json.dumps(answer.model_dump()))
            return
        console.print(
            f"{answer.id} is {answer.status}" + (f": {escape(answer.reason)}" if answer.reason else "")
        )
        if answer.explained_at is not None:
            at = datetime.fromtimestamp(answer.explained_at).strftime("%H:%M:%S")
            console.print(f"as of the scheduling round at {at}")

    @app.command()
    def cancel(job_ids: Annotated[list[str], typer.Argument(help="Job ids.", metavar="ID...")]) -> None:
        """Cancel pending or running jobs; each that cannot be (unknown, already ended) is named, and the
        exit status is 2 if any could not."""
        failed = False
        with user_errors(), connect() as client:
            for job_id in job_ids:
                try:
                    job = client.cancel(job_id)
                except APIError as error:
                    print_error(errors, error.detail)
                    failed = True
                    continue
                console.print(f"{job.id} {job.status}")
        if failed:
            raise typer.Exit(2)


def _serve(
    console: Console,
    user_errors: Callable[[], AbstractContextManager[None]],
    inventory: Inventory,
    data_dir: Path | None,
    *,
    port: int,
    policy: str,
    interval: float,
    host: str = "127.0.0.1",
    local: bool = True,
    workers: int = 1,
    log_cap: int = DEFAULT_LOG_CAP,
    pod_user: str = DEFAULT_POD_USER,
    mlflow_artifacts: str | None = None,
) -> None:
    from corral.backends.pod_users import can_switch_users
    from corral.server.serve import ServerSettings, serve
    from corral.store.database import database_url

    folder = (data_dir or default_data_dir()).resolve()
    with user_errors():
        private_umask()  # the database, its journal and the metrics files: the server's alone
        secure_data_dir(folder)
        closed = closed_parents(folder)
        if local and closed and can_switch_users():
            console.print(
                escape(
                    f"WARNING: pods run as another user, who cannot pass through {closed[0]} (no o+x), "
                    f"so their files under {folder} are out of their reach by absolute path "
                    f"(python3 train.py fails): choose a --data-dir elsewhere (/var/lib/corral, /srv) "
                    f"or chmod o+x {closed[0]}"
                )
            )
        chosen = ServerSettings(
            clusters=list(inventory.clusters),
            queues=list(inventory.queues) if inventory.queues is not None else None,
            heartbeat_timeout=inventory.heartbeat_timeout,
            data_dir=folder,
            database_url=database_url(folder),
            local=local,
            policy=policy,
            interval=interval,
            host=host,
            port=port,
            workers=workers,
            log_cap=log_cap,
            pod_user=pod_user,
            mlflow_artifacts=mlflow_artifacts,
        )
        serve(chosen, announce=console.print)


def _exit_like(job: Job, waited: bool) -> None:
    """After --wait, the exit status says how the job ended: 0 finished, 1 otherwise."""
    if waited and job.status != "finished":
        raise typer.Exit(1)


def _print_jobs(console: Console, jobs: list[Job], as_json: bool, *, single: bool = False) -> None:
    if as_json:
        payload = jobs[0].model_dump() if single else [job.model_dump() for job in jobs]
        console.print_json(json.dumps(payload))
        return
    ids = Column("id", no_wrap=True, min_width=max((len(job.id) for job in jobs), default=2))  # never cut
    columns: list[Column | str] = [ids, "name", "queue", "status", "GPUs", "node", "age"]
    table = Table(*columns) if single else Table(*columns, "reason")
    now = time.time()
    for job in jobs:
        cells = [job.id, job.name, escape(job.queue), job.status, gpus_of(job.spec)]
        cells += [escape(nodes_of(job.nodes)), format_age(now - job.submitted_at)]
        if not single:
            cells.append(escape(job.reason or ""))
        table.add_row(*cells)
    console.print(table)
    if single and jobs[0].reason:  # a sentence: on its own line, not folded into a narrow column
        console.print(f"reason: {escape(jobs[0].reason)}")


def job_name(command: list[str]) -> str:
    """A job name from its command, as Slurm names a job after its script: the program's file name
    (``python3 -u train.py``: ``python3``), cut to what a name allows; ``run`` if nothing is left."""
    line = command[0] if len(command) == 1 else shlex.join(command)
    try:
        words = shlex.split(line)
    except ValueError:  # an unbalanced quote: the shell will say so; the name need not
        words = line.split()
    program = Path(words[0]).name.lower() if words else ""
    name = re.sub(r"[^a-z0-9._-]+", "-", program)[:64].strip("._-")
    return name or "run"


def _upload(client: Client, folder: Path) -> str:
    """Pack ``folder`` and upload it unless the server has it; its digest, for the spec's ``code``."""
    from corral.workdirs import pack

    packed = pack(folder)
    with _upload_progress(len(packed.data)) as advance:
        uploaded = client.upload_code(packed, advance)
    state = "uploaded" if uploaded.stored else "already on the server"
    print(
        f"{folder.resolve()}: {packed.files} files, {len(packed.data) / 1024:.0f} KiB, {state}",
        file=sys.stderr,
    )
    return packed.digest


def _one_spec(argument: str | None, option: str | None) -> str:
    """The spec's path (or ``-``) from ``corral submit FILE`` or ``corral submit -f FILE``."""
    if (argument is None) == (option is None):
        raise CorralError("name one job spec: corral submit job.yaml, -f job.yaml, or - for stdin")
    return argument if argument is not None else option  # type: ignore[return-value]


def _environment(pairs: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` options as the spec's ``env``."""
    env = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise CorralError(f"--env {pair!r}: expected KEY=VALUE, e.g. --env WANDB_MODE=offline")
        env[key] = value
    return env


PROGRESS_FROM_BYTES = 1 << 20
"""Uploads from this size on show a progress bar (on a terminal): smaller ones take no time to watch."""


@contextlib.contextmanager
def _upload_progress(size: int) -> Iterator[Callable[[int], None] | None]:
    """A transient bar on stderr for an upload of ``size`` bytes, when stderr is a terminal and the
    upload is big enough to watch; else nothing (None: the client sends the bytes whole)."""
    target = Console(stderr=True)
    if size < PROGRESS_FROM_BYTES or not target.is_terminal:
        yield None
        return
    columns = (TextColumn("uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=target, transient=True) as progress:
        task = progress.add_task("upload", total=size)
        yield lambda sent: progress.advance(task, sent)
