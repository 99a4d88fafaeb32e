"""The pure domain model: clusters, pools, nodes, GPUs, queues and workloads. No I/O lives here."""
