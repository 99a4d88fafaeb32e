"""Validating YAML documents into pydantic models, with errors that name the line, the field and the fix.

Every file a user writes (cluster files, job specs) goes through here, so a mistake anywhere is reported
the same way: ``jobs/train.yaml:7: resources.gpus: ... (got 'A100x2')``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from corral.errors import SpecError

Model = TypeVar("Model", bound=BaseModel)


def read_text(path: Path) -> str:
    """A user's file as text; ``SpecError`` when it is missing or not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text", path=str(path)) from None


def validate_yaml(text: str, model: type[Model], *, source: str, expected: str) -> Model:
    """Parse ``text`` as one YAML mapping and validate it as ``model``; ``SpecError`` on any problem.

    ``expected`` says what the top level should be, for a document that is not a mapping.
    """
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=source, line=line) from None
    except RecursionError:
        raise SpecError("not valid YAML here: nested too deeply", path=source) from None
    if not isinstance(data, dict):
        raise SpecError(f"expected {expected}", path=source, line=1)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        raise SpecError(
            f"{format_loc(loc)}: {describe(error)}", path=source, line=_yaml_line(root, loc)
        ) from None


def format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe(error: Any) -> str:
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
