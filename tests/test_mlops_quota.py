"""Each tenant's room for MLflow artifacts on the server's disk: an upload through the gate that would
pass it is a 413 that says how much the tenant holds, and MLflow never sees it; others pass."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mlflow")

from corral.mlops.gate import ARTIFACTS, Caller, Gate  # noqa: E402
from corral.mlops.quota import ArtifactQuota  # noqa: E402


class Owners:
    """Tenant ``lab`` owns experiment 1, ``rival`` experiment 2 (what MLflow's store would say)."""

    def experiment(self, experiment_id: str) -> str | None:
        return {"1": "lab", "2": "rival"}.get(experiment_id)

    def experiments_of(self, tenant: str) -> list[str]:
        return {"lab": ["1"], "rival": ["2"]}[tenant]


def mlflow_app(stored: list[str]) -> Any:
    """Stands in for MLflow's handler: records what reached it."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stored.append(environ["PATH_INFO"])
        start_response("200 OK", [("content-type", "application/json")])
        return [b"{}"]

    return app


def test_an_artifact_upload_past_the_tenant_s_room_is_a_413_and_never_reaches_mlflow(tmp_path: Path) -> None:
    (tmp_path / "1" / "run" / "artifacts").mkdir(parents=True)
    (tmp_path / "1" / "run" / "artifacts" / "weights.bin").write_bytes(b"x" * (900 << 10))
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "big.bin").write_bytes(b"x" * (2 << 20))  # another tenant's: not lab's room
    owners: Any = Owners()
    stored: list[str] = []
    quota = ArtifactQuota(tmp_path, owners, limit=1 << 20)
    gate = Gate(mlflow_app(stored), owners, lambda token: Caller("mia", token), quota.check)

    async def upload(tenant: str, path: str, size: int) -> httpx.Response:
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://corral") as client:
            url = f"{ARTIFACTS}/{path}"
            return await client.put(url, content=b"y" * size, headers={"Authorization": f"Bearer {tenant}"})

    refused = asyncio.run(upload("lab", "1/run/artifacts/more.bin", 200 << 10))
    assert refused.status_code == 413
    assert refused.json()["detail"].startswith("tenant lab's MLflow artifacts hold 0 MiB")
    assert stored == []
    assert asyncio.run(upload("lab", "1/run/artifacts/small.bin", 100 << 10)).status_code == 200
    assert asyncio.run(upload("rival", "2/more.bin", 10)).status_code == 413  # its own 2 MiB
    assert stored == [f"{ARTIFACTS}/1/run/artifacts/small.bin"]
