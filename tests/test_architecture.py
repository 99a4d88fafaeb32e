"""The pure core stays pure: the domain model and the scheduler import no I/O, web, CLI or database code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import corral

SRC = Path(corral.__file__).parent
FORBIDDEN = {
    "sqlalchemy",
    "fastapi",
    "typer",
    "rich",
    "httpx",
    "kubernetes",
    "ray",
    "yaml",
    "requests",
    "time",
    "boto3",
    "botocore",
}
PURE_PACKAGES = ["core", "scheduling"]
PURE_MODULES = [
    SRC / "federation" / "artifacts.py",
    SRC / "pipelines" / "plan.py",
    SRC / "pipelines" / "cache.py",
    SRC / "serving" / "autoscaler.py",
    SRC / "serving" / "rollout.py",
]
"""Pure rules that live beside the I/O that applies them."""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0] if not node.module.startswith("corral.") else node.module)
    return names


@pytest.mark.parametrize(
    "path", [p for pkg in PURE_PACKAGES for p in sorted((SRC / pkg).glob("*.py"))] + PURE_MODULES, ids=str
)
def test_pure_modules_do_no_io(path: Path) -> None:
    imported = _imports(path)
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"
    outward = {m for m in imported if m.startswith(("corral.sim", "corral.cli", "corral.scenario"))}
    assert not outward, f"{path.name} reaches outward to {outward}"


def test_public_api_is_explicit() -> None:
    assert sorted(corral.__all__) == sorted(name for name in corral.__all__ if hasattr(corral, name))
    import corral.scheduling as scheduling

    assert all(hasattr(scheduling, name) for name in scheduling.__all__)
