"""Rich rendering of reports: one place decides how numbers look on a terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from corral.core.units import MILLI_PER_GPU
from corral.scenario.models import QueueSummary, Summary
from corral.scheduling import Pending


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def summary_table(summary: Summary) -> Table:
    table = Table(
        title=f"Replay with policy [bold]{summary.policy}[/]", show_header=False, title_justify="left"
    )
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    rows = [
        ("jobs", f"{summary.jobs}"),
        ("finished", f"{summary.finished}"),
        ("rejected", _rejected(summary)),
        ("still waiting", f"{summary.waiting}"),
        ("preemptions", f"{summary.preemptions}"),
        ("GPU allocation", f"{summary.gpu_allocation:.1%}"),
        ("GPU-hours used", f"{summary.gpu_hours_used:,.1f}"),
        ("wait p50 / p95", f"{format_seconds(summary.wait_p50)} / {format_seconds(summary.wait_p95)}"),
        ("JCT mean / p95", f"{format_seconds(summary.jct_mean)} / {format_seconds(summary.jct_p95)}"),
        ("makespan", format_seconds(summary.makespan)),
        ("cost", f"${summary.cost_usd:,.2f}"),
        ("deadline misses", f"{summary.deadline_misses}"),
        ("scheduler time", f"{summary.scheduler_seconds:.2f} s in {summary.scheduling_rounds} rounds"),
    ]
    if summary.forecasts:
        rows.append(("forecast time", f"{summary.forecast_seconds:.2f} s in {summary.forecasts} forecasts"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _rejected(summary: Summary) -> str:
    """``3 (never_fits 2, unknown_queue 1)``: the count and what caused it."""
    if not summary.rejected_by_reason:
        return f"{summary.rejected}"
    reasons = ", ".join(f"{reason} {count}" for reason, count in summary.rejected_by_reason.items())
    return f"{summary.rejected} ({reasons})"


def rejected_table(summary: Summary) -> Table:
    """The first rejections with their messages, so a user sees what to change."""
    shown = len(summary.rejected_jobs)
    more = f", first {shown}" if shown < summary.rejected else ""
    table = Table(title=f"Rejected ({summary.rejected}{more})", title_justify="left")
    table.add_column("job", style="cyan", no_wrap=True)
    table.add_column("t", justify="right", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("why")
    for rejected in summary.rejected_jobs:
        table.add_row(rejected.job, format_seconds(rejected.t), rejected.reason, escape(rejected.message))
    return table


def queue_table(summary: Summary) -> Table:
    table = Table(title="Per queue", title_justify="left")
    table.add_column("queue", style="cyan", no_wrap=True)
    budgeted = any(q.budget_usd is not None for q in summary.queues.values())
    columns = ["jobs", "done", "wait p50 / p95", "GPU-h", "preempted", "cost"]
    for column in [*columns, *(["most in a period / budget"] if budgeted else [])]:
        table.add_column(column, justify="right", no_wrap=True)
    for name, q in summary.queues.items():
        row = [
            name,
            f"{q.jobs}",
            f"{q.finished}",
            f"{format_seconds(q.wait_p50)} / {format_seconds(q.wait_p95)}",
            f"{q.gpu_hours:,.1f}",
            f"{q.preemptions}",
            f"${q.cost_usd:,.2f}",
        ]
        table.add_row(*row, *([_budget_use(q)] if budgeted else []))
    return table


def _budget_use(queue: QueueSummary) -> str:
    """``$40.00 / $40 a day``: a budget caps each period, so the replay's total over two days is not
    what it is judged by."""
    if queue.budget_usd is None or queue.peak_period_cost_usd is None:
        return ""
    return f"${queue.peak_period_cost_usd:,.2f} / ${queue.budget_usd:,.0f} a {queue.budget_period}"


def pending_table(pending: Mapping[str, Pending], limit: int = 10) -> Table:
    table = Table(title=f"Still waiting at the end ({len(pending)})", title_justify="left")
    table.add_column("job", style="cyan")
    table.add_column("reason")
    table.add_column("why", overflow="fold")
    for job, why in list(pending.items())[:limit]:
        table.add_row(job, why.reason.value, escape(why.message))
    return table


def print_error(console: Console, message: str) -> None:
    """``error: MESSAGE``, the message as it is: a pattern such as ``[a-z0-9]`` is not Rich markup."""
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


def format_age(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``: how long ago, as ``squeue`` and ``kubectl get`` show it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def gpus_of(spec: Mapping[str, Any]) -> str:
    """A job's GPUs as asked: ``2``, ``A100:2``, ``0.5`` per pod, ``x4`` for a 4-pod gang; ``-``: none."""
    request = spec.get("resources", {}).get("gpus") or {}
    count, milli, models = request.get("count", 0), request.get("milli", MILLI_PER_GPU), request.get("models")
    if not count:
        return "-"
    amount = f"{milli / MILLI_PER_GPU:g}" if milli < MILLI_PER_GPU else f"{count}"
    shown = f"{'|'.join(models)}:{amount}" if models else amount
    pods = spec.get("pods", 1)
    return f"{shown} x{pods}" if pods > 1 else shown


def nodes_of(nodes: list[str]) -> str:
    """The nodes a job's pods run on, each once, in pod order."""
    return ",".join(dict.fromkeys(nodes))
