"""The README's 5-minute tour works as written: its replay, policy, federation and check commands run
from the repository's layout and succeed (the trace import and the longer benchmarks are left to their
own tests, which use small inputs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
