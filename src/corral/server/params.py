"""The path parameters routes share, bounded like the columns they are looked up in.

An id longer than its column, or a pod index past what a job can have, is refused (422) before any query:
PostgreSQL would reject an integer past 32 bits, and SQLite one past 64 bits, with a 500.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from corral.limits import JOB_ID_MAX, MAX_PODS, NAME_MAX, NAME_PATTERN, NODE_NAME_MAX

JobId = Annotated[
    str, Path(min_length=1, max_length=JOB_ID_MAX, description="A job's id, e.g. j-0123abcd4567.")
]
PodIndex = Annotated[int, Path(ge=0, lt=MAX_PODS, description="Which pod of the job, from 0.")]
NodeName = Annotated[str, Path(min_length=1, max_length=NODE_NAME_MAX, pattern=NAME_PATTERN)]
QueueName = Annotated[str, Path(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)]
