"""The README's 5-minute tour works as written: its replay, policy, federation and check commands run
from the repository's layout and succeed (the trace import and the longer benchmarks are left to their
own tests, which use small inputs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from servers import free_port, stop

from corral.paths import read_token
from corral.server.process import start

REPO = Path(__file__).resolve().parents[1]
QUICK = re.compile(r"^(corral (sim|policies|check|bench policies)\b|head )")
"""Tour lines that run in seconds and need nothing from ../shared."""


def tour_commands() -> list[str]:
    """The tour's shell commands, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    block = text.split("## A 5-minute tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        command = line.split(" #", 1)[0].strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def test_the_tour_has_the_commands_this_test_runs() -> None:
    quick = quick_commands()
    assert any(c.startswith("corral sim") for c in quick) and any(c.startswith("corral check") for c in quick)


def quick_commands() -> list[str]:
    return [c for c in tour_commands() if QUICK.match(c) and "openb" not in c]


@pytest.mark.parametrize("command", quick_commands())
def test_a_tour_command_runs_as_written(command: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.getbasetemp() / "tour"  # one folder for the whole tour: later lines read out/
    (folder / "out").mkdir(parents=True, exist_ok=True)
    if not (folder / "examples").exists():
        (folder / "examples").symlink_to(REPO / "examples")
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def up_commands() -> list[str]:
    """The tour's `corral up` block, after it starts the server and exports its URL and token (the test
    does both), without the line of placeholders (ID); `corral top` once instead of live."""
    text = (REPO / "README.md").read_text()
    block = text.split("Run real jobs:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        command = line.split("  #", 1)[0].strip()
        if command and not command.startswith(("corral up", "export ")) and " ID" not in command:
            commands.append(command.replace("corral top", "corral top --once"))
    return commands


def test_a_newcomer_runs_the_corral_up_tour_as_written(tmp_path: Path) -> None:
    """A newcomer's first hour: `corral up --gpus 4` on a port of its own, then every tour command as a
    subprocess, each exiting 0 without a traceback."""
    commands = up_commands()
    assert any("submit" in command for command in commands) and len(commands) >= 6
    data = Path(tempfile.mkdtemp(prefix="corral-tour-"))  # pods pass through it: not pytest's folder
    port = free_port()
    server = start(["up", "--gpus", "4", "--data-dir", str(data), "--port", str(port)], data / "up.log", port)
    try:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = os.environ | {
            "PATH": path,
            "CORRAL_URL": f"http://127.0.0.1:{port}/api/v1",  # as `corral up` prints it
            "CORRAL_TOKEN": read_token(data) or "",
        }
        for command in commands:
            done = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-2000:]}"
    finally:
        stop(server)
        shutil.rmtree(data, ignore_errors=True)
