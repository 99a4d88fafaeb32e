"""corral: one control plane for AI workloads across an organisation's own GPUs and public-cloud GPUs.

The package is layered so data flows one way: specs (``corral.core``) are read by ``corral.scenario``,
turned into a ``corral.scheduling.Snapshot``, handed to the pure ``corral.scheduling.schedule`` function,
and its decisions are applied by a caller (today the simulator in ``corral.sim``).
"""

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.errors import CorralError, SpecError

__version__ = "0.1.0"

__all__ = [
    "ClusterSpec",
    "CorralError",
    "NodeTemplate",
    "PoolSpec",
    "QueueSpec",
    "SpecError",
    "Workload",
    "__version__",
]
