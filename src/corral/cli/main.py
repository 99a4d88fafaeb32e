"""``corral`` commands. Each command parses arguments, calls one library function and renders its result;
no scheduling or file-format logic lives here."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from corral.bench.fragmentation import ARRIVED_MARKS, EXPERIMENT_POLICIES
from corral.cli.accounts import register as register_accounts
from corral.cli.artifacts import register as register_artifacts
from corral.cli.connection import Connection
from corral.cli.control import register as register_control
from corral.cli.models import register as register_models
from corral.cli.options import CommandContext
from corral.cli.pipelines import register as register_pipelines
from corral.cli.render import pending_table, print_error, queue_table, rejected_table, summary_table
from corral.cli.services import register as register_services
from corral.errors import CorralError
from corral.scenario.io import EventWriter, load_cluster_file, load_workload, read_events, write_summary
from corral.scenario.models import Event
from corral.scheduling import POLICIES, get_policy
from corral.sim.engine import Simulator

app = typer.Typer(
    help="corral: one control plane for AI workloads on your own GPUs and the cloud's.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
trace_app = typer.Typer(help="Import public cluster traces as corral scenarios.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
bench_app = typer.Typer(help="Measure corral's scheduler on published experiments.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

console = Console()
errors = Console(stderr=True, soft_wrap=True)
connection = Connection()


@app.callback()
def options(
    url: Annotated[
        str | None,
        typer.Option(
            envvar="CORRAL_URL",
            help="The server, e.g. http://127.0.0.1:8765 (the /api/v1 that `corral up` prints may stay); "
            "default: CORRAL_URL, else http://127.0.0.1:8765.",
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(envvar="CORRAL_DEBUG", help="Show the traceback of an unexpected error."),
    ] = False,
) -> None:
    """Options every command shares."""
    connection.url = url
    connection.debug = debug


PROGRESS_THRESHOLD = 2000
"""Replays with more jobs than this show a progress bar."""


@app.command()
def sim(
    cluster: Annotated[Path, typer.Argument(help="Cluster file (YAML).")],
    workload: Annotated[Path, typer.Argument(help="Workload file (JSON Lines).")],
    policy: Annotated[str | None, typer.Option(help=f"Scheduling policy: {', '.join(POLICIES)}.")] = None,
    events: Annotated[Path | None, typer.Option(help="Write the event log here (JSON Lines).")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the summary here (JSON).")] = None,
    failures: Annotated[
        Path | None,
        typer.Option(help="Inject node events from this file (event-log lines: node_down, node_up ...)."),
    ] = None,
    fail: Annotated[
        list[str] | None,
        typer.Option(help="Fail a node: NODE@T_DOWN or NODE@T_DOWN:T_UP (seconds). Repeatable."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Replay a scenario through corral's scheduler and report what happened."""
    with _user_errors():
        cluster_file = load_cluster_file(cluster)
        jobs = load_workload(workload)
        chosen = get_policy(policy)
        injected = list(read_events(failures)) if failures else []
        injected += [event for spec in fail or [] for event in _parse_fail(spec)]
        for output in (events, summary):
            if output is not None:
                output.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            sink = None
            if events is not None:
                writer = EventWriter(stack.enter_context(open(events, "w", encoding="utf-8")))
                sink = writer.write
            on_progress = None
            if not quiet and len(jobs) > PROGRESS_THRESHOLD:
                progress = stack.enter_context(_progress(console))
                task = progress.add_task("replaying", total=len(jobs))

                def on_progress(done: int, total: int) -> None:
                    if done % 100 == 0 or done == total:
                        progress.update(task, completed=done)

            result = Simulator(
                cluster_file, jobs, chosen, cluster_events=injected, sink=sink, on_progress=on_progress
            ).run()
        if summary is not None:
            write_summary(summary, result.summary)
        if not quiet:
            console.print(summary_table(result.summary))
            if len(result.summary.queues) > 1:
                console.print(queue_table(result.summary))
            if result.summary.rejected_jobs:
                console.print(rejected_table(result.summary))
            if result.pending:
                console.print(pending_table(result.pending))


@app.command()
def check(
    cluster: Annotated[Path, typer.Argument(help="Cluster file (YAML).")],
    workload: Annotated[Path, typer.Argument(help="Workload file (JSON Lines).")],
    events: Annotated[Path, typer.Argument(help="Event log to verify (JSON Lines).")],
    truncated: Annotated[
        bool,
        typer.Option(
            "--truncated",
            help="The log is cut short (e.g. its first N lines): jobs still running at its end are reported, "
            "not a violation, and its last instant is not judged.",
        ),
    ] = False,
    work_conserving: Annotated[
        bool,
        typer.Option(
            "--work-conserving",
            help="Also check that no job waits while it fits on idle private capacity its quota allows "
            "(holds for best-effort policies such as default and fifo, not for strict-fifo).",
        ),
    ] = False,
) -> None:
    """Verify every invariant of the scenario format on an event log; report the first violation."""
    from corral.scenario.invariants import audit_files

    with _user_errors():
        report = audit_files(cluster, workload, events, truncated=truncated, work_conserving=work_conserving)
    if report.violation is not None:
        print_error(errors, str(report.violation))
        raise typer.Exit(1)
    console.print("[green]ok[/]: no invariant is violated")
    if report.running or report.waiting:
        console.print(
            f"at the end of the log (t={report.end_t:g}): {_jobs_named(report.running)} running, "
            f"{_jobs_named(report.waiting)} waiting"
        )


CHECK_NAMED_JOBS = 5
"""Jobs named per list in ``corral check``'s end-of-log line; the rest are counted."""


def _jobs_named(jobs: tuple[str, ...]) -> str:
    """``3 (a, b, c)``, or the first few and how many more."""
    if not jobs:
        return "0"
    shown = ", ".join(jobs[:CHECK_NAMED_JOBS])
    more = f", and {len(jobs) - CHECK_NAMED_JOBS} more" if len(jobs) > CHECK_NAMED_JOBS else ""
    return f"{len(jobs)} ({shown}{more})"


@app.command()
def policies() -> None:
    """List the scheduling policies."""
    table = Table("policy", "what it does")
    for policy in POLICIES.values():
        table.add_row(policy.name, policy.description)
    console.print(table)


@trace_app.command("import")
def trace_import(
    kind: Annotated[str, typer.Argument(help="Trace kind: alibaba-openb.")],
    trace_dir: Annotated[
        Path, typer.Argument(help="Folder of the trace (e.g. ../shared/traces/alibaba-gpu-v2023).")
    ],
    out: Annotated[Path, typer.Option(help="Folder to write cluster.yaml and workload.jsonl into.")],
    variant: Annotated[str, typer.Option(help="Pod list variant, e.g. default, gpushare40.")] = "default",
    tenants: Annotated[
        bool,
        typer.Option(help="A queue per qos class, with quota in proportion to its GPU-time, in one cohort."),
    ] = False,
) -> None:
    """Turn a public cluster trace into a corral scenario."""
    from corral.traces.alibaba import import_openb

    if kind != "alibaba-openb":
        print_error(errors, f"unknown trace kind {kind!r}; supported: alibaba-openb")
        raise typer.Exit(2)
    with _user_errors():
        result = import_openb(trace_dir, out, variant=variant, tenants=tenants)
    console.print(
        f"wrote {result.cluster_path} ({result.nodes} nodes, {result.gpus} GPUs) and "
        f"{result.workload_path} ({result.jobs} jobs)"
    )
    for reason, count in result.skipped.items():
        console.print(f"  skipped {count} pods: {reason}")


@bench_app.command("fragmentation")
def bench_fragmentation(
    trace_dir: Annotated[Path, typer.Option(help="Alibaba openb trace folder.")],
    out: Annotated[Path, typer.Option(help="Write the medians over seeds here (JSON).")],
    variant: Annotated[str, typer.Option(help="Pod list variant, e.g. default, gpushare40.")] = "default",
    policies: Annotated[str, typer.Option(help="Comma-separated policy names, or 'all'.")] = "all",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "42,43,44,45,46,47,48,49,50,51",
    hindsight: Annotated[
        bool, typer.Option(help="Also place the pods up to 100% arrived offline, biggest first.")
    ] = False,
) -> None:
    """The FGD fragmentation experiment (ATC'23) through corral's scheduler: unallocated GPU % by arrived load."""
    from corral.bench.fragmentation import run_experiment

    with _user_errors():
        chosen = [get_policy(p) for p in (EXPERIMENT_POLICIES if policies == "all" else policies.split(","))]
        seed_list = _parse_integers(seeds, "--seeds")
        with _progress(console) as progress:
            task = progress.add_task("seeds", total=len(chosen) * len(seed_list) * (2 if hindsight else 1))

            def on_seed(policy: str, seed: int, result: object) -> None:
                progress.update(task, advance=1, description=f"{policy} seed {seed}")

            report = run_experiment(
                trace_dir, variant, chosen, seed_list, on_seed=on_seed, hindsight=hindsight
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = Table("policy", *(f"{mark}%" for mark in ARRIVED_MARKS), "s/seed")
    for name, result in report["policies"].items():  # type: ignore[attr-defined]
        curve = result["unallocated_pct"]
        table.add_row(
            name,
            *(f"{curve[str(m)]:.2f}" if str(m) in curve else "-" for m in ARRIVED_MARKS),
            f"{result['seconds']:.1f}",
        )
    table.title = f"Unallocated GPU % by arrived workload ({variant}, median of {len(seed_list)} seeds)"
    console.print(table)


@bench_app.command("federation")
def bench_federation(
    trace_dir: Annotated[Path, typer.Option(help="Alibaba openb trace folder.")],
    out: Annotated[Path, typer.Option(help="Write the comparison here (JSON).")],
    plot: Annotated[
        Path | None, typer.Option(help="Write the cost-against-p95-wait plot here (PNG).")
    ] = None,
    table: Annotated[Path | None, typer.Option(help="Write the tables here (Markdown).")] = None,
    bound_jobs: Annotated[int, typer.Option(help="Jobs in the window the LP bound is solved on.")] = 300,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds of the scenario draws.")] = "0,1,2,3,4",
) -> None:
    """When to burst: never, always, fixed waits and corral's rule on the Alibaba trace, with a cost bound."""
    from corral.bench.federation import markdown_table, plot_cost_against_wait, report

    with _user_errors(), _progress(console) as progress:
        task = progress.add_task("policies", total=None)
        result = report(
            trace_dir,
            seeds=_parse_integers(seeds, "--seeds"),
            bound_jobs=bound_jobs,
            on_done=lambda row: progress.update(task, description=f"{row.policy} done"),
        )
    lines = _write_report(result, out, markdown_table(result), table)
    if plot is not None:
        plot_cost_against_wait(result, plot)
    console.print("\n".join(lines))
    eta = result["eta"]
    console.print(
        f"forecast private start, held-back 40% of jobs: MAE {eta['mae_seconds']:.0f} s "  # type: ignore[index]
        f"(median {eta['median_abs_seconds']:.0f} s; 'starts now' would be {eta['baseline_mae_seconds']:.0f} s)"  # type: ignore[index]
    )


@bench_app.command("policies")
def bench_policies(
    out: Annotated[Path, typer.Option(help="Write every run, ratio and median here (JSON).")],
    trace_dir: Annotated[
        Path | None, typer.Option(help="Alibaba openb trace folder: adds the contended trace scenario.")
    ] = None,
    seeds: Annotated[
        str, typer.Option(help="Comma-separated seeds of the scenarios.")
    ] = "101,102,103,104,105",
    policies: Annotated[str, typer.Option(help="Comma-separated policy names (fifo is the baseline).")] = (
        "default,fifo,strict-fifo,spread"
    ),
    families: Annotated[
        str, typer.Option(help="Comma-separated generated families: mixed, gangs, tenants.")
    ] = ("mixed,gangs,tenants"),
    jobs: Annotated[int, typer.Option(help="Jobs per scenario (the trace: consecutive arrivals).")] = 2000,
    plot: Annotated[Path | None, typer.Option(help="Write the ratio-to-fifo plot here (PNG).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the tables here (Markdown).")] = None,
) -> None:
    """Every policy on contended scenarios (issue 13): JCT, waits, allocation, work lost to preemption."""
    from corral.bench.contended import FAMILIES
    from corral.bench.policies import BASELINE, markdown_table, plot_ratios, run_benchmark, scenarios

    with _user_errors():
        names = [get_policy(name).name for name in policies.split(",")]
        if BASELINE not in names:
            raise CorralError(f"--policies {policies!r}: include {BASELINE}, the baseline of every ratio")
        chosen = [family for family in families.split(",") if family]
        unknown = sorted(set(chosen) - set(FAMILIES))
        if unknown:
            raise CorralError(f"--families: unknown {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
        if jobs < 1:
            raise CorralError(f"--jobs {jobs}: a scenario needs at least one job")
        scenario_list = scenarios(chosen, _parse_integers(seeds, "--seeds"), jobs, trace_dir)
        with _progress(console) as progress:
            task = progress.add_task("runs", total=len(scenario_list) * len(names))

            def on_done(run: object) -> None:
                progress.update(task, advance=1, description=f"{run.scenario} {run.seed} {run.policy}")  # type: ignore[attr-defined]

            report = run_benchmark(scenario_list, names, on_done=on_done)
    lines = _write_report(report, out, markdown_table(report), markdown)
    if plot is not None:
        plot_ratios(report, plot)
    console.print("\n".join(lines))


@bench_app.command("throughput")
def bench_throughput(
    trace_dir: Annotated[Path, typer.Option(help="Alibaba openb trace folder (node mix and pod list).")],
    out: Annotated[Path, typer.Option(help="Write the results here (JSON).")],
    nodes: Annotated[str, typer.Option(help="Comma-separated cluster sizes.")] = "1000,2000,5000,10000",
    pods: Annotated[str, typer.Option(help="Comma-separated numbers of pending pods.")] = "100000",
    policies: Annotated[str, typer.Option(help="Comma-separated policy names.")] = "fifo,default,best-fit,"
    "gpu-packing,fgd,corral-fgd",
    cluster: Annotated[str, typer.Option(help="Node mix: openb (trace mix replicated) or dgx.")] = "openb",
) -> None:
    """Scheduler speed: placements per second of one round over many pending pods, and peak memory."""
    from corral.bench.throughput import CLUSTER_KINDS, Run, run_benchmark

    with _user_errors():
        if cluster not in CLUSTER_KINDS:
            raise CorralError(f"--cluster {cluster!r}: choose one of {', '.join(CLUSTER_KINDS)}")
        names = [get_policy(name).name for name in policies.split(",")]
        sizes = _parse_integers(nodes, "--nodes")
        counts = _parse_integers(pods, "--pods")
        runs = [Run(cluster, size, count, name) for size in sizes for count in counts for name in names]
        table = Table("policy", "nodes", "pods", "placed", "seconds", "placements/s", "peak RSS MiB")
        with _progress(console) as progress:
            task = progress.add_task("runs", total=len(runs))

            def on_run(run: Run, result: object) -> None:
                progress.update(task, advance=1, description=f"{run.policy} at {run.nodes} nodes")

            report = run_benchmark(trace_dir, runs, on_run=on_run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for policy, rows in report["runs"][cluster].items():  # type: ignore[index]
        for row in rows:
            table.add_row(
                policy,
                str(row["nodes"]),
                str(row["pods"]),
                str(row["placed"]),
                f"{row['seconds']:.1f}",
                f"{row['placements_per_second']:.0f}",
                f"{row['peak_rss_mib']:.0f}",
            )
    table.title = f"One scheduling round per row ({cluster} nodes)"
    console.print(table)


def _parse_integers(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CorralError(f"{option} {text!r}: expected comma-separated integers, e.g. 42,43,44") from None


def _parse_fail(spec: str) -> list[Event]:
    match = re.fullmatch(r"(?P<node>[^@]+)@(?P<down>\d+(?:\.\d*)?)(?::(?P<up>\d+(?:\.\d*)?))?", spec)
    if match is None:
        raise CorralError(f"--fail {spec!r}: expected NODE@T_DOWN or NODE@T_DOWN:T_UP, e.g. dgx-1@3600:7200")
    down = float(match["down"])
    injected = [Event(t=down, event="node_down", node=match["node"])]
    if match["up"] is not None:
        up = float(match["up"])
        if up <= down:
            raise CorralError(f"--fail {spec!r}: the node must come back up after it went down")
        injected.append(Event(t=up, event="node_up", node=match["node"]))
    return injected


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn corral's deliberate errors into a one-line message and exit status 2, without a traceback."""
    try:
        yield
    except CorralError as exc:
        print_error(errors, str(exc))
        raise typer.Exit(2) from None


def _write_report(report: object, out: Path, lines: list[str], markdown: Path | None) -> list[str]:
    """A benchmark's figures as JSON at ``out`` and, when asked, its table as markdown; the table's lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def _progress(target: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=target,
        transient=True,
    )


_context = CommandContext(console, _user_errors, connection.client)
for _register in (
    register_control,
    register_accounts,
    register_artifacts,
    register_pipelines,
    register_models,
    register_services,
):
    _register(app, _context)


def main() -> None:
    """The ``corral`` command: an error nobody foresaw is one line naming it (and ``--debug``), not a
    page of traceback; deliberate errors are handled where they arise (``_user_errors``)."""
    try:
        app()
    except Exception as error:
        if connection.debug:
            raise
        print_error(
            errors,
            f"{type(error).__name__}: {error} (this is a bug in corral: run again with --debug for the "
            "traceback and report it)",
        )
        sys.exit(1)
