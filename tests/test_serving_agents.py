"""A service whose replica runs on an agent's node: a real `corral server` without nodes of its own and a
real `corral agent` on loopback that advertises 127.0.0.2, so a replica reached there was reached at the
address its node's agent reported, not at the server's own loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import admin_client, free_port, start_server, stop, stop_pods
from test_serving import service, until
from typer.testing import CliRunner

from corral.api_models import NodeRegistration
from corral.cli.main import app
from corral.client import APIError, Client

ADVERTISED = "127.0.0.2"
"""Loopback too (all of 127/8 is), but not where the server's own nodes are reached."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    folder = tmp_path_factory.mktemp("serving-agents")
    for passed_through in [folder, *folder.parents[:2]]:  # pods pass through, as a data dir must let them
        passed_through.chmod(passed_through.stat().st_mode | 0o711)
    port = free_port()
    server = start_server(folder, port, cluster=None, extra=["--no-local"])
    agent: subprocess.Popen[bytes] | None = None
    try:
        with admin_client(folder, port) as client:
            token = client.create_user("agent-m-0", "default", "agent").token
            command = [sys.executable, "-m", "corral", "agent", "--node", "m-0", "--server", client.url]
            command += ["--data-dir", str(folder / "m-0"), "--interval", "0.2", "--gpus", "0"]
            command += ["--advertise-address", ADVERTISED]
            with open(folder / "m-0.log", "ab") as log:
                env = os.environ | {"CORRAL_TOKEN": token}
                agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            until(lambda: [n.name for n in client.nodes()] == ["m-0"], 30, "the agent registered")
            yield client, folder
            for running in client.services():
                client.remove_service(running["name"])
            until(lambda: not client.jobs(status="running"), 30, "replicas stopped")
    finally:
        for process in (agent, server):
            if process is not None:
                stop(process)
        stop_pods(folder)


def test_a_replica_on_an_agents_node_is_reached_at_the_address_its_agent_advertises(
    fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = fleet
    monkeypatch.setenv("CORRAL_TOKEN", client._http.headers["authorization"].removeprefix("Bearer "))
    assert client.nodes()[0].address == ADVERTISED
    url = client.apply_service(service("remote", replicas={"min": 0, "max": 1}))["url"]
    token = client._http.headers["authorization"]
    answer = httpx.get(url, headers={"Authorization": token}, timeout=60)  # held while it starts there
    assert answer.status_code == 200, answer.text
    assert answer.json()["host"] == ADVERTISED  # it listened on CORRAL_NODE_ADDRESS, the gateway went there
    assert answer.json()["gateway"]
    (replica,) = client.service("remote")["replicas"]
    assert replica["node"] == "m-0" and replica["url"].startswith(f"http://{ADVERTISED}:")
    status = CliRunner().invoke(app, ["--url", client.url, "services", "status", "remote"])
    assert status.exit_code == 0 and f"on m-0 at {replica['url']}: ready" in status.output
    with pytest.raises(httpx.HTTPError):  # nothing listens on the server's loopback for it
        httpx.get(replica["url"].replace(ADVERTISED, "127.0.0.1"), timeout=5)


def test_an_agent_that_advertises_nothing_is_reached_where_it_connects_from(fleet) -> None:
    client, _ = fleet
    registration = NodeRegistration(cluster="spare", cpu=1, memory_gib=1)
    with pytest.raises(APIError) as refused:
        client.register("m-9", registration, address="not a host")
    assert refused.value.status == 422 and "address" in refused.value.detail
    try:
        assert client.register("m-9", registration).address == "127.0.0.1"
        assert client.register("m-9", registration, address="::1").address == "::1"
    finally:
        client.remove_node("m-9")


def test_a_replica_listens_on_the_port_its_agent_chose_where_it_runs(fleet) -> None:
    """The agent picks the port free on its node just before the start and reports it; the gateway
    reaches the replica there, and the report is fenced like an exit's."""
    client, folder = fleet
    url = client.apply_service(service("chosen", replicas={"min": 1, "max": 1}))["url"]
    answer = httpx.get(url, headers={"Authorization": client._http.headers["authorization"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    (replica,) = client.service("chosen")["replicas"]
    port = int(replica["url"].rsplit(":", 1)[1])
    chosen = folder / "m-0" / "runs" / replica["job_id"] / "attempt-1" / "pod-0" / "port"
    assert answer.json()["port"] == port == int(chosen.read_text())
    with pytest.raises(APIError) as stale:
        client.report_start(replica["job_id"], 2, 0, port + 1)
    assert stale.value.status == 409 and "attempt 2 is over" in stale.value.detail
    with pytest.raises(APIError) as bad:
        client.report_start(replica["job_id"], 1, 0, 0)
    assert bad.value.status == 422
    assert client.service("chosen")["replicas"][0]["url"] == replica["url"]
    client.remove_service("chosen")
