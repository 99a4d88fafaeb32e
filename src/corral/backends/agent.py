"""``corral agent``: runs the pods the control plane assigns to one node, on that node.

Every step: send a heartbeat, ask which pods should run here, make the local processes match (start,
adopt after a restart, stop the rest), and report each pod that ended, once. The agent keeps no state
of its own beyond the pods' files, so killing and restarting it loses nothing; if it stays away longer
than the server's heartbeat timeout, the server requeues its work elsewhere.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx

from corral.backends.pods import PodRunner
from corral.client import APIError, Client

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, client: Client, node: str, data_dir: Path) -> None:
        self.client = client
        self.node = node
        self.runner = PodRunner(data_dir / "runs")
        self._reported: set[tuple[str, int, int]] = set()

    def step(self) -> None:
        self.client.heartbeat(self.node)
        desired = self.client.node_pods(self.node)
        for pod in desired:
            code = self.runner.ensure(pod)
            if code is not None and pod.key not in self._reported:
                self.client.report_exit(pod.job_id, pod.attempt, pod.pod, code)
                self._reported.add(pod.key)
        self.runner.stop_others({pod.key for pod in desired})

    def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                self.step()
            except (httpx.TransportError, APIError) as error:  # the server may be restarting
                log.warning("agent %s: %s; retrying", self.node, error)
            time.sleep(interval)
