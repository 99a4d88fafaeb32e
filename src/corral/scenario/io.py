"""Reading and writing scenario files, with errors that name the file, the line and the field.

A user who mistypes one number in a 100,000-line workload file should be told exactly where, so every
reader here maps pydantic's error location back to a line of the input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import BaseModel, ValidationError

from corral.core.workloads import Workload
from corral.errors import SpecError
from corral.scenario.models import ClusterFile, Event, Summary
from corral.spec.validation import describe, format_loc, read_text, validate_yaml


def load_cluster_file(path: str | Path) -> ClusterFile:
    """Read a cluster YAML file; raise ``SpecError`` naming line and field for any problem."""
    path = Path(path)
    return validate_yaml(
        read_text(path),
        ClusterFile,
        source=str(path),
        expected="a mapping with 'clusters' (and optionally 'queues')",
    )


def load_workload(path: str | Path) -> list[Workload]:
    """Read a workload JSONL file (one job a line, blank lines allowed); ids must be unique."""
    return list(_read_jsonl(Path(path), Workload, unique_id=True))


def read_events(path: str | Path) -> Iterator[Event]:
    """Stream an event log (or a failure-injection file, which uses the same line format)."""
    return _read_jsonl(Path(path), Event, unique_id=False)


def _read_jsonl(path: Path, model: type[BaseModel], *, unique_id: bool) -> Iterator[Any]:
    seen: dict[str, int] = {}
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SpecError(
                    f"not valid JSON: {exc.msg} (column {exc.colno})", path=str(path), line=number
                ) from None
            except RecursionError:
                raise SpecError("not valid here: nested too deeply", path=str(path), line=number) from None
            if not isinstance(data, dict):
                raise SpecError("expected a JSON object on each line", path=str(path), line=number)
            try:
                record = model.model_validate(data)
            except ValidationError as exc:
                error = exc.errors()[0]
                raise SpecError(
                    f"{format_loc(tuple(error['loc']))}: {describe(error)}", path=str(path), line=number
                ) from None
            if unique_id:
                job_id = record.id
                if job_id in seen:
                    raise SpecError(
                        f"id: {job_id!r} is already used on line {seen[job_id]}; job ids must be unique",
                        path=str(path),
                        line=number,
                    )
                seen[job_id] = number
            yield record


class EventWriter:
    """Appends events to a JSONL log as they happen, so a long replay streams instead of buffering."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle

    def write(self, event: Event) -> None:
        self._handle.write(json.dumps(event.to_json_dict(), separators=(", ", ": ")))
        self._handle.write("\n")


def write_events(path: str | Path, events: Iterable[Event]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        writer = EventWriter(handle)
        for event in events:
            writer.write(event)


def write_workload(path: str | Path, workloads: Iterable[Workload]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for workload in workloads:
            handle.write(workload.model_dump_json())
            handle.write("\n")


def write_cluster_file(path: str | Path, cluster_file: ClusterFile) -> None:
    """Write a cluster file that reads back as the same ``ClusterFile``. Unset optional fields are left
    out, but a queue's ``quota: null`` (no quota at all) is written: left out, it would read back as the
    default, an empty quota, and every job of the queue would be rejected."""
    data = cluster_file.model_dump(mode="json", exclude_none=True)
    for queue, written in zip(cluster_file.queues or [], data.get("queues", []), strict=True):
        if queue.quota is None:
            written["quota"] = None
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)


def write_summary(path: str | Path, summary: Summary) -> None:
    Path(path).write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _open(path: Path) -> IO[str]:
    try:
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", path=str(path)) from None
