"""A runner killed between spawning a pod's process and writing its pid file (kill -9 of the server or
agent, simulated by removing what it had not yet written): the next runner adopts the pod if it runs,
takes it as vanished if it began, and starts it only if it never began. No pod runs twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from builders import make_desired_pod

from corral.backends.pods import VANISHED_EXIT_CODE, WRAPPER, DesiredPod, PodRunner

IMPOSTOR = """
import sys, time
fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: what /proc/<pid>/cmdline shows
posing = sys.argv[1].replace("\\x1f", "\\0").encode() + b"\\0"
with open("/proc/self/mem", "r+b", buffering=0) as memory:
    memory.seek(start)
    memory.write(posing.ljust(end - start, b"\\0"))
print("posing", flush=True)
time.sleep(30)
"""
"""A process whose command line, as others read it, is its first argument split at \\x1f (a process may
rewrite its own arguments' memory, as setproctitle does)."""


def counting_pod(seconds: float) -> DesiredPod:
    return make_desired_pod("j", {"command": f"echo ran >> runs.log; sleep {seconds}"})


def until_ended(runner: PodRunner, pod: DesiredPod) -> int:
    for _ in range(400):
        if (code := runner.ensure(pod)) is not None:
            return code
        time.sleep(0.05)
    raise AssertionError("the pod did not end")


@pytest.fixture
def orphans() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The killed runner's children, reaped at the end (a real kill -9 leaves them to init)."""
    left: list[subprocess.Popen[bytes]] = []
    yield left
    for child in left:
        child.kill()
        child.wait(timeout=10)


def killed_before_its_pid_was_written(
    runs: Path, pod: DesiredPod, orphans: list[subprocess.Popen[bytes]]
) -> PodRunner:
    """Start the pod, then undo what the runner writes after the spawn: what a kill -9 there leaves."""
    first = PodRunner(runs)
    assert first.ensure(pod) is None
    orphans.extend(first._children.values())
    files = first.files(pod.job_id, pod.attempt, pod.pod)
    files.pid.unlink()
    files.process.unlink()
    assert files.starting.exists()
    return PodRunner(runs)  # the restarted process


def test_a_pod_whose_pid_was_never_written_is_adopted_not_started_again(
    tmp_path: Path, orphans: list[subprocess.Popen[bytes]]
) -> None:
    pod = counting_pod(1)
    restarted = killed_before_its_pid_was_written(tmp_path / "runs", pod, orphans)
    restarted.stop_others({pod.key})  # a restart's first sync
    assert restarted.ensure(pod) is None  # still running: adopted
    assert until_ended(restarted, pod) == 0
    assert (restarted.files("j", 1, 0).work / "runs.log").read_text() == "ran\n"


def test_a_pod_left_mid_start_and_no_longer_wanted_is_stopped(
    tmp_path: Path, orphans: list[subprocess.Popen[bytes]]
) -> None:
    pod = counting_pod(60)
    restarted = killed_before_its_pid_was_written(tmp_path / "runs", pod, orphans)
    files = restarted.files("j", 1, 0)
    for _ in range(200):  # until it began: its shell may not have run yet
        if files.began.exists():
            break
        time.sleep(0.05)
    restarted.stop_others(set())  # cancelled while no runner ran
    pid = int(files.pid.read_text())
    for _ in range(200):
        restarted.stop_others(set())
        if not restarted.alive(pid):
            break
        time.sleep(0.05)
    assert not restarted.alive(pid)


def test_a_pod_that_began_and_vanished_is_not_started_again(tmp_path: Path) -> None:
    pod = counting_pod(0)
    runner = PodRunner(tmp_path / "runs")
    assert until_ended(runner, pod) == 0
    files = runner.files("j", 1, 0)
    for written in (files.pid, files.process, files.exit):  # as if it ran and died with no exit code
        written.unlink()
    restarted = PodRunner(tmp_path / "runs")
    assert restarted.ensure(pod) == VANISHED_EXIT_CODE
    assert (files.work / "runs.log").read_text() == "ran\n"


def test_a_pod_marked_starting_that_never_began_starts(tmp_path: Path) -> None:
    pod = counting_pod(0)
    runner = PodRunner(tmp_path / "runs")
    files = runner.files("j", 1, 0)
    files.work.mkdir(parents=True)
    files.starting.touch()  # killed right before the spawn
    assert until_ended(runner, pod) == 0
    assert (files.work / "runs.log").read_text() == "ran\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a process as another user")
def test_a_process_of_another_user_posing_as_a_pod_s_wrapper_is_not_adopted(
    tmp_path: Path, orphans: list[subprocess.Popen[bytes]]
) -> None:
    """A pod (another user) that learns a job id may start a session leader with that pod's wrapper's
    command line while the runner is down mid-start: it is not taken for the pod, which starts."""
    pod = counting_pod(0)
    runner = PodRunner(tmp_path / "runs")
    files = runner.files("j", 1, 0)
    files.work.mkdir(parents=True)
    files.starting.touch()  # killed right before the spawn
    posing = ["/bin/sh", "-c", WRAPPER, "corral-pod", str(files.exit), "sleep", "30"]
    drop = ["setpriv", "--reuid=64003", "--regid=64003", "--clear-groups", "--"]
    impostor = subprocess.Popen(
        [*drop, sys.executable, "-c", IMPOSTOR, "\x1f".join(posing), "x" * 4096],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    orphans.append(impostor)
    assert impostor.stdout is not None and impostor.stdout.readline() == b"posing\n"
    impostor.stdout.close()
    assert psutil.Process(impostor.pid).cmdline()[:5] == posing[:5]
    assert until_ended(runner, pod) == 0
    assert (files.work / "runs.log").read_text() == "ran\n"
    assert impostor.poll() is None  # never signalled as the pod's
