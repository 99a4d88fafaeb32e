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


def load_cluster_file(path: str | Path) -> ClusterFile:
    """Read a cluster YAML file; raise ``SpecError`` naming line and field for any problem."""
    path = Path(path)
    text = _read_text(path)
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", path=str(path), line=line
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            "expected a mapping with 'clusters' (and optionally 'queues')", path=str(path), line=1
        )
    try:
        return ClusterFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        raise SpecError(
            f"{_format_loc(loc)}: {_describe(error)}", path=str(path), line=_yaml_line(root, loc)
        ) from None


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
            if not isinstance(data, dict):
                raise SpecError("expected a JSON object on each line", path=str(path), line=number)
            try:
                record = model.model_validate(data)
            except ValidationError as exc:
                error = exc.errors()[0]
                raise SpecError(
                    f"{_format_loc(tuple(error['loc']))}: {_describe(error)}", path=str(path), line=number
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
    data = cluster_file.model_dump(mode="json", exclude_none=True)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)


def write_summary(path: str | Path, summary: Summary) -> None:
    Path(path).write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text", path=str(path)) from None


def _open(path: Path) -> IO[str]:
    try:
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", path=str(path)) from None


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _describe(error: Any) -> str:
    """pydantic's message, with the fix spelled out for the common cases."""
    kind = error["type"]
    if kind == "missing":
        return "field required: add it"
    if kind == "extra_forbidden":
        return "unknown field: remove it or check its spelling"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "input" in error and kind not in ("model_type",) and not isinstance(error["input"], (dict, list)):
        return f"{message} (got {error['input']!r})"
    return message


def _yaml_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc``, or of its deepest existing parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
