"""The event-driven control plane: a pod's exit wakes the loop, and one round both records the exit and
hands the freed GPUs to the next job (counted in rounds, with a tick too long to explain it)."""

from __future__ import annotations

import time
from pathlib import Path

from builders import make_cluster, make_pool

from corral.backends.local import LocalBackend
from corral.control.loop import ReconcileLoop
from corral.control.reconcile import Inventory
from corral.scheduling import get_policy
from corral.spec.job import parse_job_spec
from corral.store.jobs import JobStore

ONE_GPU = Inventory(clusters=[make_cluster("lab", [make_pool("box", flavor="a100", count=1, gpus=1)])])
NO_TICK = 3600.0
"""An interval no test waits for: every round these tests see was started by a poke."""


def spec(name: str, command: str) -> object:
    return parse_job_spec(f"name: {name}\ncommand: '{command}'\nresources: {{gpus: 1, cpu: 0.1}}")


def wait_until(condition: object, limit: float = 30.0) -> None:
    """Until ``condition()`` holds; the limit only keeps a broken build from hanging the suite."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_a_pod_exit_wakes_the_loop_and_one_round_finishes_it_and_starts_the_next_job(
    store: JobStore, tmp_path: Path
) -> None:
    first, second = store.submit(spec("first", "true")), store.submit(spec("second", "sleep 60"))
    backend = LocalBackend(store, tmp_path)
    loop = ReconcileLoop(
        store.engine,
        ONE_GPU,
        get_policy("default"),
        interval=NO_TICK,
        after_round=backend.sync,
        before_round=backend.record_exits,
    )
    backend.runner.on_exit = loop.poke
    loop.start()
    try:
        loop.poke()  # the submissions' poke: round 1 starts the first job, which exits at once
        wait_until(lambda: loop.rounds >= 2 and store.get(second.id).status == "running")
        # Round 2, started by the exit alone, recorded it and gave its GPU to the second job.
        assert loop.rounds == 2
        assert store.get(first.id).status == "finished"
        ended = next(e.t for e in store.events(first.id) if e.kind == "finished")
        started = next(e.t for e in store.events(second.id) if e.kind == "started")
        assert started >= ended
    finally:
        loop.stop()
        store.cancel(second.id)
        backend.sync()  # stops the sleeping pod
