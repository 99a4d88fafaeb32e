"""A step the loop pokes runs on its own thread after every poke, never twice at once, and goes on
after a failure."""

from __future__ import annotations

import threading

from corral.server.background import BackgroundStep


def test_pokes_during_a_run_are_folded_into_one_more_run_on_the_steps_own_thread() -> None:
    release, running = threading.Event(), threading.Event()
    runs: list[str] = []

    def step() -> None:
        runs.append(threading.current_thread().name)
        running.set()
        release.wait(10)

    background = BackgroundStep(step, "test-step")
    background.poke()
    assert running.wait(10)
    for _ in range(5):  # while the first run waits: one more run, not five
        background.poke()
    release.set()
    assert background.wait(10)
    assert runs == ["test-step", "test-step"]


def test_a_failing_step_runs_again_at_the_next_poke() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("MLflow is away")

    background = BackgroundStep(step, "test-failing-step")
    background.poke()
    assert background.wait(10)
    background.poke()
    assert background.wait(10)
    assert calls == [0, 1]
