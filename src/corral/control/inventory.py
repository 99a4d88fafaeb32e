"""What this machine has, for ``corral up`` and ``corral agent``: GPUs found by NVML, or declared.

NVML (the ``nvidia-ml-py`` package) reports each GPU's model, memory and health when an NVIDIA driver is
present; without one, ``--gpus N`` declares N GPUs so the demo and tests run on any machine (pods still
get ``CUDA_VISIBLE_DEVICES``, which nothing will use). A GPU is unhealthy when NVML cannot query it or it
has uncorrected ECC errors since the driver loaded: the control plane then drains it.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from corral.api_models import GpuReport, NodeRegistration
from corral.control.fleet import pool_for
from corral.core.cluster import ClusterSpec

DECLARED_GPU_MEMORY_GIB = 16.0


def detect_gpus() -> list[GpuReport] | None:
    """The NVIDIA GPUs of this machine with their health, or None when NVML is missing or finds none."""
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        return [_probe(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())] or None
    finally:
        pynvml.nvmlShutdown()


def _probe(nvml: Any, index: int) -> GpuReport:
    """``nvml`` is the pynvml module (untyped)."""
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
    except nvml.NVMLError:
        return GpuReport(index=index, model="unknown", memory_gib=1.0, healthy=False)
    model = name.decode() if isinstance(name, bytes) else name
    return GpuReport(index=index, model=model, memory_gib=round(memory, 1), healthy=_ecc_clean(nvml, handle))


def _ecc_clean(nvml: Any, handle: object) -> bool:
    try:
        errors = nvml.nvmlDeviceGetTotalEccErrors(
            handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
        )
    except nvml.NVMLError:  # ECC off or not supported: nothing to say
        return True
    return int(errors) == 0


def this_machine(
    declared_gpus: int | None = None,
    gpu_model: str = "virtual",
    *,
    cluster: str = "agents",
    pool: str | None = None,
    flavor: str | None = None,
    private: bool = True,
) -> NodeRegistration:
    """This machine's CPUs, memory and GPUs (``declared_gpus`` overrides what NVML finds)."""
    gpus = detect_gpus() if declared_gpus is None else None
    if gpus is None:
        gpus = [
            GpuReport(index=i, model=gpu_model, memory_gib=DECLARED_GPU_MEMORY_GIB)
            for i in range(declared_gpus or 0)
        ]
    return NodeRegistration(
        cluster=cluster,
        pool=pool,
        flavor=flavor,
        private=private,
        cpu=float(os.cpu_count() or 1),
        memory_gib=_memory_gib(),
        gpus=gpus,
    )


def hostname() -> str:
    """This machine's short name, as a node name (lowercase, digits and dashes)."""
    return re.sub(r"[^a-z0-9-]", "-", socket.gethostname().split(".")[0].lower()).strip("-") or "local"


def local_cluster(
    declared_gpus: int | None = None, gpu_model: str = "virtual", gpu_hour_cost: float = 0.0
) -> ClusterSpec:
    """This machine as cluster ``local`` with one node, for ``corral up``; ``gpu_hour_cost`` is what
    ``corral cost`` charges each tenant per GPU-hour (what the hardware costs you, 0: not counted)."""
    machine = this_machine(declared_gpus, gpu_model, cluster="local", pool=hostname(), flavor="local")
    pool = pool_for(machine, count=1).model_copy(update={"gpu_hour_cost": gpu_hour_cost})
    return ClusterSpec(name="local", private=True, pools=[pool])


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 8.0
