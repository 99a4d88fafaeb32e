"""The reconcile loop's kept copy of the pending and running jobs: brought up to date from the event log
alone, it equals a full read of the store after any sequence of submissions, rounds (starts, preemptions,
rejections, requeues from lost nodes, time limits), exits, retries and cancels; and the periodic full read
finds and replaces a copy that went wrong."""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
from collections.abc import Callable

import pytest
from builders import make_cluster, make_pool
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from corral.control.active import ActiveJob, ActiveJobs, read_all
from corral.control.reconcile import Inventory, RoundConflict, reconcile
from corral.scheduling import get_policy
from corral.spec.job import parse_job_spec
from corral.store.database import open_store
from corral.store.jobs import JobAlreadyEnded, JobStore
from corral.store.local_postgres import fresh_database
from corral.store.nodes import NodeStore

NODES = ("n-0", "n-1")
INVENTORY = Inventory(
    clusters=[make_cluster("lab", [make_pool("n", flavor="a100", count=len(NODES), gpus=8)])],
    heartbeat_timeout=10.0,
)
POLICY = get_policy("default")
NEVER = float("inf")


def job_spec(gpus: int, priority: int, retries: int, time_limit: int | None) -> object:
    lines = [
        "name: j",
        "command: 'true'",
        f"resources: {{gpus: {gpus}, cpu: 1}}",
        f"priority: {priority}",
        f"retries: {retries}",
        "checkpoint: {dir: /ckpt, interval: 30}",
    ]
    if time_limit is not None:
        lines.append(f"time_limit: {time_limit}s")
    return parse_job_spec("\n".join(lines))


def full_read(engine: Engine, now: float) -> dict[str, ActiveJob]:
    with Session(engine) as session:
        return dict(read_all(session, {}, now)[2])


class KeptCopyMatchesTheStore(RuleBasedStateMachine):
    """Random events against one store; after each, the copy (event log only: no periodic full read)
    equals a full read."""

    def __init__(self, make_url: Callable[[str], str]) -> None:
        """``make_url``: a new store's URL, given a folder for its files."""
        super().__init__()
        self.folder = tempfile.mkdtemp()
        self.now = 0.0
        self.engine = open_store(make_url(self.folder))
        ids = itertools.count()
        self.store = JobStore(self.engine, clock=lambda: self.now, new_id=lambda: f"j-{next(ids):012d}")
        self.nodes = NodeStore(self.engine, clock=lambda: self.now)
        self.jobs = ActiveJobs(full_read_seconds=NEVER)
        self.submitted: list[str] = []

    @initialize()
    def nodes_answer(self) -> None:
        for name in NODES:
            self.nodes.heartbeat(name)

    @rule(
        gpus=st.sampled_from([1, 2, 4, 8, 16]),
        priority=st.integers(0, 10),
        retries=st.integers(0, 1),
        time_limit=st.none() | st.integers(20, 200),
    )
    def submit(self, gpus: int, priority: int, retries: int, time_limit: int | None) -> None:
        self.submitted.append(self.store.submit(job_spec(gpus, priority, retries, time_limit)).id)

    @rule(seconds=st.sampled_from([0.0, 1.0, 15.0, 60.0, 600.0]), silent=st.none() | st.sampled_from(NODES))
    def round(self, seconds: float, silent: str | None) -> None:
        """Time passes, every node but ``silent`` answers (a silent node is down after 10 s), a round."""
        self.now += seconds
        for node in NODES:
            if node != silent:
                self.nodes.heartbeat(node)
        result = reconcile(self.engine, INVENTORY, POLICY, self.now, self.jobs)
        stored = full_read(self.engine, self.now)
        # What `corral why` reads is this round's explanation, though only the changed ones are written.
        assert {job: stored[job].reason for job in result.pending} == {
            job: waiting.message for job, waiting in result.pending.items()
        }

    def _active(self, status: str) -> list[str]:
        return sorted(job.id for job in full_read(self.engine, self.now).values() if job.status == status)

    @rule(data=st.data(), succeeded=st.booleans())
    def exit(self, data: st.DataObject, succeeded: bool) -> None:
        """A running job's pods exit (a failure with a retry left makes it wait again)."""
        running = self._active("running")
        if running:
            reason = None if succeeded else "pod 0 exited with code 1"
            self.store.finish(data.draw(st.sampled_from(running)), succeeded=succeeded, reason=reason)

    @rule(data=st.data(), status=st.sampled_from(["pending", "running"]))
    def cancel(self, data: st.DataObject, status: str) -> None:
        jobs = self._active(status)
        if jobs:
            self.store.cancel(data.draw(st.sampled_from(jobs)))

    @precondition(lambda self: self.submitted)
    @rule(data=st.data(), seconds=st.sampled_from([0.0, 15.0]))
    def cancel_during_a_round(self, data: st.DataObject, seconds: float) -> None:
        """A cancel commits after the round read the jobs, before it writes: a round that would write
        on that job is rolled back (and the next decides again), any other commits."""
        job = data.draw(st.sampled_from(self.submitted))
        read = self.jobs.refresh

        def read_then_cancel(session: Session, now: float) -> None:
            read(session, now)
            try:
                self.store.cancel(job)
            except JobAlreadyEnded:
                pass

        self.now += seconds
        self.jobs.refresh = read_then_cancel  # type: ignore[method-assign]
        try:
            reconcile(self.engine, INVENTORY, POLICY, self.now, self.jobs)
        except RoundConflict:
            assert self.store.get(job).status == "cancelled"
        finally:
            del self.jobs.refresh

    @invariant()
    def the_copy_equals_a_full_read(self) -> None:
        with Session(self.engine) as session:
            self.jobs.refresh(session, self.now)
        assert self.jobs.jobs == full_read(self.engine, self.now)
        jobs = self.jobs.jobs.values()
        waiting = {job.id: job for job in jobs if job.status == "pending"}
        assert self.jobs.waiting == waiting  # the indexes a round starts from are the copy's
        assert self.jobs.running == {job.id: job for job in jobs if job.status == "running"}
        assert self.jobs.reasons == {job.id: job.reason for job in waiting.values()}
        assert self.jobs.progressed == {
            job.id: job.checkpointed_seconds for job in waiting.values() if job.checkpointed_seconds
        }
        assert self.jobs.forecasted == {
            job.id
            for job in waiting.values()
            if job.forecast_start is not None or job.burst_cost_usd is not None
        }

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_kept_copy_equals_a_full_read_after_random_events(
    database: str, request: pytest.FixtureRequest
) -> None:
    if database == "sqlite":
        make_url: Callable[[str], str] = lambda folder: f"sqlite:///{folder}/corral.db"  # noqa: E731
    else:
        server = request.getfixturevalue("postgres")
        make_url = lambda folder: fresh_database(server)  # noqa: E731
    run_state_machine_as_test(
        lambda: KeptCopyMatchesTheStore(make_url),
        settings=settings(
            max_examples=25, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )


def test_the_periodic_full_read_finds_a_copy_that_went_wrong_and_trusts_the_store(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = ActiveJobs(full_read_seconds=60.0)
    job = store.submit(job_spec(16, 0, 0, None))  # fits no node: it waits... until rejected
    waiting = store.submit(job_spec(8, 0, 0, None))
    NodeStore(store.engine).heartbeat("n-0")
    with Session(store.engine) as session:
        jobs.refresh(session, 0.0)
    with store.engine.begin() as connection:  # a change that logged no event: the copy cannot know
        connection.execute(text("UPDATE jobs SET reason = 'edited' WHERE id = :id"), {"id": waiting.id})
    with Session(store.engine) as session:
        jobs.refresh(session, 30.0)
        assert jobs.jobs[waiting.id].reason is None
        with caplog.at_level(logging.ERROR, logger="corral.control.active"):
            jobs.refresh(session, 61.0)
    assert jobs.jobs[waiting.id].reason == "edited" and job.id in jobs.jobs
    assert "differs from the store for 1" in caplog.text
