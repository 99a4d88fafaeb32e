"""The bounds every input is checked against, in one place so the specs, the API models and the routes
agree with each other and with the store's columns (``corral.store.schema``).

A value past one of these is refused with a 422 that names the field, before it reaches the scheduler
or the database: an INTEGER column on PostgreSQL holds 32 bits, a VARCHAR its length, and SQLite's
integers 64 bits, so anything larger would otherwise fail in the store (a 500) on one database only.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT32_MAX = 2**31 - 1
"""The largest value an INTEGER column holds on PostgreSQL (attempts, pods, exit codes, priorities)."""

MAX_PODS = 4096
"""Pods in one job (a gang): more than any cluster corral schedules has nodes to start together."""
MAX_GPUS_PER_POD = 64
"""Whole GPUs one pod may ask for: more than any single machine has."""
MAX_CPU = 4096.0
"""CPU cores one pod or node may have."""
MAX_MEMORY_GIB = 2.0**20
"""GiB of memory (main or GPU) one pod or node may have: 1 PiB."""
MAX_SECONDS = 10 * 365 * 86400.0
"""Longest duration (time limits, checkpoint intervals, burst delays): ten years."""
MAX_WEIGHT = 1e6
"""Largest fair-share weight or per-flavor GPU quota of a queue."""
MAX_EXIT_CODE = 255
"""Exit codes are 0-255 from the shell; a process killed by a signal may be reported as minus it."""

NAME_MAX = 64
"""Names of tenants, users, queues, cohorts, clusters, pools and flavors (their columns' length)."""
NODE_NAME_MAX = 128
"""A node's name (the ``nodes`` and ``placements`` columns' length): host names may be long."""
JOB_ID_MAX = 40
"""A job id (``jobs.id``)."""
IDEMPOTENCY_KEY_MAX = 128
"""A client's ``Idempotency-Key``."""
GPU_MODEL_MAX = 64
"""A GPU model's name as a spec or an agent writes it."""
NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
"""Queue, cohort, cluster, pool, flavor and node names: what fits in a URL path and a file name."""

MAX_LOG_OFFSET = 2**53
"""Largest byte offset into a pod's output a request may name (a log of 8 PiB): exact as a float, and
far below what a 64-bit column or a file seek holds."""
MAX_REQUEST_BYTES = 16 << 20
"""Largest request body the API reads (a shipped log chunk is at most 1 MiB of text, which JSON may
escape to a few times that); a larger one is refused with a 413 before it is read."""
MAX_LOG_CHUNK_CHARS = 1 << 20
"""Most text one shipped log chunk may carry: what the agent sends at most (``MAX_CHUNK_BYTES``)."""
MAX_PATH_CHARS = 4096
"""A file path a request names (Linux's PATH_MAX)."""

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)]
"""A queue, cohort, cluster, pool or flavor name as a request writes it."""
MAX_TAIL_LINES = 1_000_000
"""Most lines a log read may ask for from the end (more: read it by range)."""
