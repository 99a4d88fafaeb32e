"""Watching jobs from the terminal: waiting with a live status line, following logs, and ``corral top``.

Status polls the API (every half second); a followed log is streamed by the server as it is written.
A watcher can come and go without the server keeping anything for it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from corral.api_models import Job, JobEventOut
from corral.client import Client

POLL_SECONDS = 0.5
ENDED = ("finished", "failed", "cancelled")


def wait_for_end(client: Client, job: Job, console: Console, *, quiet: bool = False) -> Job:
    """Wait until ``job`` ends. On a terminal: a spinner with why it waits, then its output (pod 0) as it
    runs, like a command run here; ``quiet``: nothing (for --json)."""
    if quiet:
        return _poll(client, job, ENDED)
    with console.status(_line(job)) as status:
        job = _poll(client, job, ("running", *ENDED), lambda current: status.update(_line(current)))
    follow_logs(client, job.id)
    return client.job(job.id)


def _poll(client: Client, job: Job, until: tuple[str, ...], seen: Callable[[Job], None] | None = None) -> Job:
    while job.status not in until:
        time.sleep(POLL_SECONDS)
        job = client.job(job.id)
        if seen is not None:
            seen(job)
    return job


def _line(job: Job) -> str:
    started = time.time() - (job.started_at or job.submitted_at)
    where = f"{job.status} for {started:.0f} s" + (f" (attempt {job.attempt})" if job.attempt > 1 else "")
    reason = f": {escape(job.reason)}" if job.reason and job.status == "pending" else ""
    return f"{job.id} {where}{reason}"


def follow_logs(client: Client, job_id: str, pod: int = 0, tail: int | None = None) -> None:
    """Print a pod's output as it grows until the job ends (the server streams it; a new attempt after a
    preemption or a lost node starts a new log, announced with a rule); ``tail``: from its last lines."""
    for text in client.follow_logs(job_id, pod, tail=tail):
        sys.stdout.write(text)
        sys.stdout.flush()


def events_table(events: list[JobEventOut], since: float) -> Table:
    table = Table("after", "event", "reason", title="events", title_justify="left")
    for event in events:
        table.add_row(f"{event.t - since:.1f} s", event.kind, escape(event.reason or ""))
    return table


def live_view(client: Client, console: Console, interval: float = 2.0, once: bool = False) -> None:
    """A live view of nodes (GPUs allocated), queues (waiting, running) and the newest jobs."""
    if once:
        console.print(_view(client))
        return
    with Live(_view(client), console=console, screen=False, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(_view(client), refresh=True)


def _view(client: Client) -> Group:
    nodes = Table("node", "pool", "GPUs used", "", "heartbeat", title="nodes", title_justify="left")
    now = time.time()
    for node in client.nodes():
        bar = _bar(node.gpus_allocated, node.gpus)
        sick = f" [red]{len(node.unhealthy_gpus)} drained[/]" if node.unhealthy_gpus else ""
        heard = f"{now - node.last_heartbeat:.0f} s ago" if node.last_heartbeat else "-"
        nodes.add_row(node.name, node.pool, f"{node.gpus_allocated:g}/{node.gpus}{sick}", bar, heard)
    queues = Table("queue", "pending", "running", title="queues", title_justify="left")
    for queue in client.queues():
        queues.add_row(escape(queue.name), str(queue.pending), str(queue.running))
    jobs = Table("id", "name", "queue", "status", "reason", title="jobs (newest)", title_justify="left")
    for job in client.jobs(limit=15):
        jobs.add_row(job.id, job.name, escape(job.queue), job.status, escape(job.reason or ""))
    return Group(nodes, queues, jobs)


def _bar(used: float, total: int, width: int = 16) -> str:
    if not total:
        return ""
    filled = round(width * used / total)
    return "[green]" + "█" * filled + "[/][dim]" + "·" * (width - filled) + "[/]"
