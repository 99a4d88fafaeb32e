"""This machine as a one-node cluster, for ``corral up``: GPUs found by NVML, or declared.

NVML (the ``nvidia-ml-py`` package) reports the GPUs, their model and memory when an NVIDIA driver is
present; without one, ``--gpus N`` declares N GPUs so the demo and tests run on any machine (pods still
get ``CUDA_VISIBLE_DEVICES``, which nothing will use).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec


@dataclass(frozen=True)
class DetectedGpus:
    count: int
    model: str
    memory_gib: float


def detect_gpus() -> DetectedGpus | None:
    """The NVIDIA GPUs of this machine, or None when NVML is missing or finds none."""
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if not count:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
        return DetectedGpus(count, name.decode() if isinstance(name, bytes) else name, round(memory, 1))
    finally:
        pynvml.nvmlShutdown()


def local_cluster(declared_gpus: int | None = None, gpu_model: str = "virtual") -> ClusterSpec:
    """This machine as cluster ``local`` with one node: its CPUs and memory, and its GPUs (``declared_gpus``
    overrides what NVML finds)."""
    detected = detect_gpus() if declared_gpus is None else None
    gpus = detected.count if detected else (declared_gpus or 0)
    template = NodeTemplate(
        cpu=float(os.cpu_count() or 1),
        memory_gib=_memory_gib(),
        gpus=gpus,
        gpu_model=(detected.model if detected else gpu_model) if gpus else None,
        gpu_memory_gib=(detected.memory_gib if detected else 16.0) if gpus else 0.0,
    )
    name = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().split(".")[0].lower()).strip("-") or "local"
    return ClusterSpec(
        name="local", private=True, pools=[PoolSpec(name=name, flavor="local", count=1, node=template)]
    )


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 8.0
