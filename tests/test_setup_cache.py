"""A job's ``setup`` runs once per node, tenant and setup key (its commands, code, image and env), not once
per pod: later pods start in a copy of the folder the setup left and use the environment it built."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import make_desired_pod

from corral.backends.pods import DesiredPod, PodRunner


@pytest.fixture(autouse=True)
def passable(tmp_path: Path) -> None:
    """The pod user reaches its setup folder by its absolute path, as on a server's data dir (0711)."""
    for folder in [tmp_path, *tmp_path.parents[:2]]:
        folder.chmod(folder.stat().st_mode | 0o711)


def _pod(
    job_id: str, setup: str, command: str, tenant: str = "default", env: dict[str, str] | None = None
) -> DesiredPod:
    return make_desired_pod(job_id, {"command": command, "setup": setup, "env": env or {}}, tenant)


def _run(runner: PodRunner, *pods: DesiredPod) -> list[str]:
    """Start ``pods`` together, wait for all, and return their output; each must exit 0."""
    codes: dict[str, int] = {}
    while len(codes) < len(pods):
        for pod in pods:
            if pod.job_id not in codes and (code := runner.ensure(pod)) is not None:
                codes[pod.job_id] = code
    logs = [runner.files(pod.job_id, 1, 0).log.read_text() for pod in pods]
    assert all(code == 0 for code in codes.values()), list(zip(codes.values(), logs, strict=True))
    return logs


SETUP = "echo running setup; echo built > artifact.txt"


def test_later_pods_skip_the_setup_and_start_in_what_it_left(tmp_path: Path) -> None:
    runner = PodRunner(tmp_path / "runs")
    first = _run(runner, _pod("a", SETUP, "cat artifact.txt; echo changed > artifact.txt"))
    second = _run(runner, _pod("b", SETUP, "cat artifact.txt"))
    assert first == ["running setup\nbuilt\n"]
    assert second == ["built\n"]  # no second setup; the first pod's own change is not seen


def test_pods_starting_together_wait_for_one_setup(tmp_path: Path) -> None:
    runner = PodRunner(tmp_path / "runs")
    setup = 'echo once >> "$CORRAL_SETUP_DIR/runs.txt"; sleep 0.5'
    logs = _run(runner, *[_pod(f"p{index}", setup, 'cat "$CORRAL_SETUP_DIR/runs.txt"') for index in range(4)])
    assert logs == ["once\n"] * 4


def test_a_failed_setup_runs_again_for_the_next_pod(tmp_path: Path) -> None:
    runner = PodRunner(tmp_path / "runs")
    marker = tmp_path / "fail-once"
    marker.write_text("")
    marker.chmod(0o666)
    tmp_path.chmod(0o777)  # the pod user may delete the marker
    setup = (
        f"if [ -e {marker} ]; then rm {marker}; echo half > partial.txt; exit 3; fi; echo ok > partial.txt"
    )
    failing = _pod("a", setup, "true")
    while (code := runner.ensure(failing)) is None:
        pass
    assert code == 3
    assert _run(runner, _pod("b", setup, "cat partial.txt")) == ["ok\n"]


def test_another_setup_or_tenant_gets_its_own_run(tmp_path: Path) -> None:
    runner = PodRunner(tmp_path / "runs")
    _run(runner, _pod("a", SETUP, "true"))
    assert _run(runner, _pod("b", SETUP + " ", "true")) == ["running setup\n"]
    assert _run(runner, _pod("c", SETUP, "true", tenant="vision")) == ["running setup\n"]


def test_a_virtual_environment_the_setup_made_is_active_in_every_pod(tmp_path: Path) -> None:
    runner = PodRunner(tmp_path / "runs")
    setup = (
        "python3 -m venv --without-pip $CORRAL_SETUP_DIR/venv && python -c 'import sys; print(sys.prefix)'"
    )
    command = "python -c 'import sys; print(sys.prefix)'; echo $VIRTUAL_ENV"
    venv = f"{runner.setups}/default/{_pod('a', setup, command).setup_key}/venv"
    assert _run(runner, _pod("a", setup, command)) == [f"{venv}\n" * 3]  # in the setup, then the pod
    assert _run(runner, _pod("b", setup, command)) == [f"{venv}\n" * 2]


def test_a_home_the_spec_sets_is_not_the_folder_a_later_pod_starts_afresh_in(tmp_path: Path) -> None:
    runner = PodRunner(tmp_path / "runs")
    home = tmp_path / "home"
    home.mkdir(mode=0o777)
    (home / "keep.txt").write_text("mine\n")
    (home / "keep.txt").chmod(0o666)
    env = {"HOME": str(home)}
    _run(runner, _pod("a", SETUP, "true", env=env))
    assert _run(runner, _pod("b", SETUP, "cat artifact.txt", env=env)) == ["built\n"]
    assert (home / "keep.txt").read_text() == "mine\n"
