"""``corral agent``: runs the pods the control plane assigns to one node, on that node.

At start, and whenever the machine's inventory changes (a GPU turns unhealthy), the agent registers it;
every step: send a heartbeat (once per interval), take the pods that should run here, make the local
processes match (start, adopt after a restart, stop the rest), and report each pod that ended, once.
A step runs every interval, and at once when one of its pods exits or the node's pods change: a watcher
thread long-polls the server for them (``GET /nodes/{name}/pods?wait=``), which answers as soon as a
round changed them, so a pod starts within a request's time of the decision. The agent keeps no state
of its own beyond the pods' files, so killing and restarting it loses nothing; if it stays away longer
than the server's heartbeat timeout, the server requeues its work elsewhere.

Fencing: every pod is named by job, attempt and pod, and the server refuses (409) a report about an
attempt that is not the job's current run, so a pod left over from an earlier attempt changes nothing.
And an agent that has not reached the server for the node's heartbeat timeout (the server says it in
every heartbeat's answer) stops all its pods, since by then the server has given them to other nodes:
two attempts of a job never both run for long.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from corral.api_models import NodeRegistration, NodeState
from corral.backends.pods import DesiredPod, PodIdentities, PodRunner
from corral.client import APIError, Client, ServerUnreachable
from corral.errors import CorralError
from corral.workdirs import PackedFolder, digest_of

log = logging.getLogger(__name__)


MAX_CHUNK_BYTES = 1 << 20
"""Most output sent in one request; a pod that writes faster catches up over the next steps."""
STAND_IN = "?"
"""What a byte of output that text cannot carry (outside UTF-8, or NUL, which PostgreSQL's text holds
not) is shipped as: one byte for one, so the stored length stays the file's."""
codecs.register_error("corral-stand-in", lambda error: (STAND_IN * (error.end - error.start), error.end))
PROBE_SECONDS = 10.0
"""How often the agent looks at its GPUs again (an NVML query per GPU)."""
WATCH_SECONDS = 5.0
"""Longest a long-poll for the node's pods waits for a change before the server answers anyway; short,
since a server shutting down waits for the requests in flight."""
WATCH_RETRY_SECONDS = 1.0
"""Pause before asking again after a long-poll failed (the server may be restarting)."""


class Agent:
    def __init__(
        self,
        client: Client,
        node: str,
        data_dir: Path,
        machine: Callable[[], NodeRegistration] | None = None,
        node_lost: float | None = None,
        identities: PodIdentities | None = None,
        address: str | None = None,
    ) -> None:
        """``machine`` says what this machine has now (NVML or declared); None: the node is declared in
        the server's cluster file and the agent only heartbeats. ``node_lost``: seconds without
        reaching the server after which the agent stops its pods, until the server says its timeout
        (``corral agent`` passes the server's default; None: none until the server says).
        ``identities``: who each tenant's pods run as (see ``PodRunner``). ``address``: where the gateway
        reaches this node's service replicas, told to the server and to pods (``CORRAL_NODE_ADDRESS``);
        None: the address the server sees the agent connect from, and pods listen on every interface."""
        self.client = client
        self.node = node
        self.address = address
        self.code_cache = data_dir / "code"
        self.runner = PodRunner(
            data_dir / "runs", identities, self._fetch_code, self._fetch_mount, address or "0.0.0.0"
        )
        self.machine = machine
        self.node_lost = node_lost
        self._contact = time.monotonic()
        """When the last heartbeat (or registration) the server answered was sent: the server heard
        the node no earlier, so it cannot have given the node's work away before ``node_lost`` after."""
        self._registered: NodeRegistration | None = None
        self._probed_at = float("-inf")
        self._reported: set[tuple[str, int, int]] = set()
        self._ports_reported: set[tuple[str, int, int]] = set()
        """Pods whose port was reported (the server's pods say it too, once it has recorded it)."""
        self._shipped: dict[tuple[str, int, int], int] = {}
        """Bytes of each pod's output the server holds (as it last said)."""
        self._heard_at = float("-inf")
        """When the server last answered a heartbeat or registration (monotonic seconds)."""
        self._assigned: list[DesiredPod] | None = None
        """The node's pods as the watcher last heard them; None until it has."""
        self._wake = threading.Event()

    def step(self, every: float = 0.0) -> None:
        """Heartbeat (unless the server answered one within ``every`` seconds), then make this node's
        processes match its pods, as the watcher last heard them (or asked now, without one)."""
        if time.monotonic() - self._heard_at >= every:
            self._register_or_heartbeat()
        desired = self._assigned if self._assigned is not None else self.client.node_pods(self.node)
        self.runner.stop_others({pod.key for pod in desired})  # free GPUs before starting new pods
        for pod in desired:
            try:
                code = self.runner.ensure(
                    pod
                )  # a pod that cannot start has ended (code 127, reason in its log)
            except Exception:
                log.exception(
                    "agent %s: pod %s could not be synced; trying again next step", self.node, pod.key
                )
                continue
            self.runner.free_dropped_output(pod)
            if pod.key in self._reported:
                continue
            try:
                self._report_port(pod)
                if code == 0 and pod.pod == 0 and pod.spec.outputs:
                    self._upload_outputs(pod)
                self._ship_output(pod, ended=code is not None)
                if code is not None:
                    self.client.report_exit(pod.job_id, pod.attempt, pod.pod, code)
                    self._reported.add(pod.key)
            except APIError as error:
                if error.status >= 500:
                    raise
                if error.status != 409:  # refused about this pod: the node's other pods still go on
                    log.warning("agent %s: a report on pod %s was refused: %s", self.node, pod.key, error)
                    continue
                # The attempt is over (the job runs again elsewhere, or ended): nothing more to tell;
                # the next step's pods leave it out and it is stopped.
                log.info("agent %s: %s", self.node, error.detail)
                self._reported.add(pod.key)

    def _report_port(self, pod: DesiredPod) -> None:
        """Tell the server the port a pod was given here (``listen_port``), once: until it is known
        there, a service's gateway cannot reach the pod."""
        if not pod.spec.listen_port or pod.port is not None or pod.key in self._ports_reported:
            return
        port = self.runner.port(pod)
        if port is not None:
            self.client.report_start(pod.job_id, pod.attempt, pod.pod, port)
            self._ports_reported.add(pod.key)

    def _fetch_code(self, pod: DesiredPod) -> Path:
        """The archive of the pod's uploaded code, downloaded once per digest (with this agent's token,
        which the server accepts for pods on its node) and kept: a job's pods and its later attempts,
        and other jobs of the same code, start from the copy here."""
        digest = pod.spec.code or ""
        path = self.code_cache / (digest.removeprefix("sha256:") + ".tar.gz")
        if path.is_file():
            return path
        data = self.client.pod_code(pod.job_id, pod.attempt, pod.pod)
        if digest_of(data) != digest:
            raise CorralError(f"the server sent code that is not {digest}")
        self.code_cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)
        return path

    def _fetch_mount(self, pod: DesiredPod, digest: str) -> Path:
        """A stored output the pod mounts, downloaded once per digest (as code is) and kept."""
        path = self.code_cache / (digest.removeprefix("sha256:") + ".tar.gz")
        if path.is_file():
            return path
        data = self.client.pod_mount(pod.job_id, pod.attempt, pod.pod, digest)
        if digest_of(data) != digest:
            raise CorralError(f"the server sent an archive that is not {digest}")
        self.code_cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)
        return path

    def _upload_outputs(self, pod: DesiredPod) -> None:
        """Send pod 0's declared outputs to the server before reporting its exit, so the job has them
        when it ends; what is missing is said in its output (shipped next)."""

        def keep(name: str, packed: PackedFolder) -> None:
            self.client.put_output(pod.job_id, pod.attempt, pod.pod, name, packed.data)

        self.runner.store_outputs(pod, keep)

    def fence(self, margin: float = 0.0) -> bool:
        """Stop every pod here when the server has not been reached for the node-lost timeout, less
        ``margin`` (the time until the next look): the server gives them away then. True when it did."""
        if self.node_lost is None or time.monotonic() - self._contact + margin < self.node_lost:
            return False
        self.runner.stop_others(set())
        return True

    def _ship_output(self, pod: DesiredPod, *, ended: bool) -> None:
        """Send the pod's output the server does not have yet: whole lines while it runs (a line cut in
        the middle of a character would not decode), everything once it ended."""
        log = self.runner.files(pod.job_id, pod.attempt, pod.pod).log
        while True:
            offset = self._shipped.get(pod.key, 0)
            try:
                with open(log, "rb") as file:
                    file.seek(offset)
                    data = file.read(MAX_CHUNK_BYTES)
            except FileNotFoundError:
                return
            full = len(data) == MAX_CHUNK_BYTES
            if not ended:
                data = data[: data.rfind(b"\n") + 1]
            if not data and pod.key in self._shipped:
                return
            text = shippable(data)
            self._shipped[pod.key] = self.client.ship_logs(pod.job_id, pod.attempt, pod.pod, offset, text)
            if not (ended and full):
                return

    def _register_or_heartbeat(self) -> None:
        now = time.monotonic()
        if self.machine is not None and now - self._probed_at >= PROBE_SECONDS:
            self._probed_at = now
            found = self.machine()
            if found != self._registered:
                self._heard(now, self.client.register(self.node, found, self.address))
                self._registered = found
                return
        try:
            self._heard(now, self.client.heartbeat(self.node, self.address))
        except APIError as error:
            if error.status == 404 and self.machine is not None:  # the server forgot us: register again
                self._registered, self._probed_at = None, float("-inf")
            raise

    def _heard(self, sent_at: float, state: NodeState) -> None:
        self._contact = sent_at
        self._heard_at = time.monotonic()
        self.node_lost = state.heartbeat_timeout

    def _watch(self) -> None:
        """Long-poll the node's pods for ever; each change wakes the step loop."""
        tag = None
        while True:
            try:
                pods, new_tag = self.client.watch_pods(self.node, wait=WATCH_SECONDS, known=tag)
            except (ServerUnreachable, APIError) as error:
                log.info("agent %s: watching its pods: %s; retrying", self.node, error)
                time.sleep(WATCH_RETRY_SECONDS)
                continue
            if new_tag != tag or self._assigned is None:
                tag, self._assigned = new_tag, pods
                self._wake.set()

    def run(self, interval: float = 1.0) -> None:
        """Step every ``interval`` seconds, and whenever a pod exits or the node's pods change."""
        self.runner.on_exit = self._wake.set
        threading.Thread(target=self._watch, name="corral-agent-watch", daemon=True).start()
        while True:
            self._wake.clear()  # before the step: a change during it makes the next wait return at once
            try:
                self.step(every=interval)
            except (ServerUnreachable, APIError) as error:  # the server may be restarting
                log.warning("agent %s: %s; retrying", self.node, error)
                if self.fence(margin=interval):
                    log.warning(
                        "agent %s: server out of reach for %s s: stopped its pods", self.node, self.node_lost
                    )
            self._wake.wait(interval)


def shippable(data: bytes) -> str:
    """A pod's output as the text a chunk carries, as long in UTF-8 as ``data``: the server answers with
    the stored length, which the agent resumes its file from. U+FFFD for a bad byte took 3 bytes for 1
    (the next chunk skipped output), and a NUL made every chunk a 422 on PostgreSQL."""
    return data.decode(errors="corral-stand-in").replace("\x00", STAND_IN)
