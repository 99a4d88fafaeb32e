"""A real Slurm cluster on loopback, to measure corral beside it: one slurmctld and N slurmd "nodes" of 8
fake GPUs each (character devices, so Slurm sets CUDA_VISIBLE_DEVICES), Debian's Slurm 22.05 with its
defaults but what a loopback cluster needs.

    python benchmarks/slurm_cluster.py start [--nodes 1]     # prints sinfo once the nodes are idle
    python benchmarks/slurm_cluster.py stop

Needs root (it writes /etc/slurm/slurm.conf and gres.conf, the munge key, and device nodes) and the
packages: ``apt-get install slurmctld slurmd slurm-client munge``. State, logs and pid files live under
``/tmp/corral-slurm``. From ``/work/shared/slurm/up.sh``, which is where this setup comes from.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

STATE = Path("/tmp/corral-slurm")
CONFIG = Path("/etc/slurm")
MUNGE_KEY = Path("/etc/munge/munge.key")
GPUS_PER_NODE = 8
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")


def config(nodes: int) -> str:
    host = socket.gethostname().split(".")[0]
    lines = [
        "ClusterName=corralbench",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmctldPort=16817",
        f"StateSaveLocation={STATE}/state",
        f"SlurmdSpoolDir={STATE}/spool/%n",
        f"SlurmctldLogFile={STATE}/log/ctld.log",
        f"SlurmdLogFile={STATE}/log/slurmd-%n.log",
        f"SlurmctldPidFile={STATE}/ctld.pid",
        f"SlurmdPidFile={STATE}/slurmd-%n.pid",
        "ProctrackType=proctrack/pgid",
        "TaskPlugin=task/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "GresTypes=gpu",
        "ReturnToService=2",
        "MpiDefault=none",
        "SlurmdParameters=config_overrides",
    ]
    lines += [
        f"NodeName=dgx{i} NodeHostname={host} NodeAddr=127.0.0.1 Port={16820 + i} CPUs=64 RealMemory=200000 "
        f"Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN"
        for i in range(1, nodes + 1)
    ]
    lines.append("PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO")
    return "\n".join(lines) + "\n"


def start(nodes: int) -> list[psutil.Process]:
    """Start the controller and ``nodes`` slurmd; returns them once every node is idle."""
    if shutil.which("slurmctld") is None:
        raise RuntimeError(f"Slurm is not installed: apt-get install {' '.join(PACKAGES)}")
    stop()
    shutil.rmtree(STATE, ignore_errors=True)
    for folder in ("spool", "state", "log"):
        (STATE / folder).mkdir(parents=True)
    _munge()
    for index in range(GPUS_PER_NODE):
        device = STATE / f"fakegpu{index}"
        os.mknod(device, 0o666 | 0o020000, os.makedev(195, index))  # what an NVIDIA device node is
    CONFIG.mkdir(exist_ok=True)
    (CONFIG / "slurm.conf").write_text(config(nodes))
    (CONFIG / "gres.conf").write_text(
        f"NodeName=dgx[1-{nodes}] Name=gpu File={STATE}/fakegpu[0-{GPUS_PER_NODE - 1}]\n"
    )
    processes = [_daemon(["slurmctld", "-D"], "ctld")]
    time.sleep(2)
    processes += [_daemon(["slurmd", "-D", "-N", f"dgx{i}"], f"sd{i}") for i in range(1, nodes + 1)]
    deadline = time.monotonic() + 60
    while _idle_nodes() < nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Slurm's {nodes} nodes were not idle within 60 s; see {STATE}/log")
        time.sleep(0.5)
    return processes


def stop() -> None:
    """Stop what ``start`` started (by the pids it wrote), and wait until it is gone."""
    stopping = []
    for pid_file in STATE.glob("*.mypid"):
        with contextlib.suppress(psutil.NoSuchProcess, ValueError):
            process = psutil.Process(int(pid_file.read_text()))
            process.send_signal(signal.SIGTERM)
            stopping.append(process)
        pid_file.unlink()
    _, alive = psutil.wait_procs(stopping, timeout=10)
    for process in alive:
        process.kill()


@contextlib.contextmanager
def slurm_cluster(nodes: int) -> Iterator[list[psutil.Process]]:
    processes = start(nodes)
    try:
        yield processes
    finally:
        stop()


def _munge() -> None:
    MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
    if not MUNGE_KEY.exists():
        MUNGE_KEY.write_bytes(os.urandom(1024))
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_KEY, "munge", "munge")
    shutil.chown("/run/munge", "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    if subprocess.run(["pgrep", "-u", "munge", "munged"], capture_output=True).returncode != 0:
        subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged"], check=True)


def _daemon(arguments: list[str], name: str) -> psutil.Process:
    with open(STATE / "log" / f"{name}.out", "ab") as output:
        process = subprocess.Popen(arguments, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    (STATE / f"{name}.mypid").write_text(str(process.pid))
    return psutil.Process(process.pid)


def _idle_nodes() -> int:
    answer = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True)
    return sum(1 for state in answer.stdout.split() if state == "idle") if answer.returncode == 0 else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args()
    if args.action == "stop":
        stop()
        return
    start(args.nodes)
    print(subprocess.run(["sinfo"], capture_output=True, text=True).stdout)


if __name__ == "__main__":
    main()
