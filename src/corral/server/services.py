"""What the API's routes work with: the stores, the inventory, the loop and the backend's logs and files.

One ``ControlPlane`` per app (``app.state.control_plane``); routes get it through ``control_plane``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from corral.control.fleet import fleet
from corral.control.loop import ReconcileLoop
from corral.control.metrics import ControlPlaneMetrics
from corral.control.reconcile import Inventory
from corral.core.nodes import Node
from corral.logs import DEFAULT_LOG_CAP, LogOpener, LogSource
from corral.scheduling import Snapshot
from corral.spec.queue import QueueConfig
from corral.store.accounts import AccountStore, Principal
from corral.store.code import CodeStore
from corral.store.jobs import JobStore
from corral.store.logs import LogStore
from corral.store.nodes import NodeStore
from corral.store.queues import QueueStore

TOKEN_CACHE_SECONDS = 1.0
"""How long an authenticated token is trusted without asking the store again. Revoking through this
process takes effect at once; through another (an API worker of ``--workers N``, another server), within
this time. One indexed lookup per token per second is nothing next to the requests it serves."""


FOLLOW_SECONDS = 0.5
"""How often a followed log is looked at again for new output (a stat or one indexed query)."""
STORE_WATCH_SECONDS = 0.5
"""How often a long-poll reads the store again when the reconcile loop runs in another process (an API
worker of ``--workers N``), which cannot tell it that a round decided."""

CATALOG_SECONDS = 5.0
"""How long queues and the fleet are reused between reads of the store: every submission checks them."""


@dataclass(frozen=True)
class Catalog:
    snapshot: Snapshot
    queues: dict[str, QueueConfig]
    read_at: float


@dataclass
class ControlPlane:
    jobs: JobStore
    inventory: Inventory
    loop: ReconcileLoop | None = None
    logs: LogOpener | None = None
    """Pods' output on this machine (the local backend's files); None without a local backend."""
    runs: Path | None = None
    """Where the local backend keeps each job's pods' folders (``<runs>/<job id>``); None without one."""
    local_nodes: frozenset[str] = frozenset()
    """The nodes this server's local backend runs (``corral up``'s machine): no agent may register or
    heartbeat them, which would make them wait for heartbeats that never come."""
    log_cap: int = DEFAULT_LOG_CAP
    """Bytes of each pod's output kept (shipped chunks) and served (files)."""
    code: CodeStore | None = None
    """Uploaded working folders (in the data dir); None: this server keeps none."""
    follow_seconds: float = FOLLOW_SECONDS
    accounts: AccountStore = field(init=False)
    shipped_logs: LogStore = field(init=False)
    queues: QueueStore = field(init=False)
    nodes: NodeStore = field(init=False)
    metrics: ControlPlaneMetrics = field(init=False)
    _principals: dict[str, tuple[Principal, float]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _catalog: Catalog | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        engine = self.jobs.engine
        self.accounts = AccountStore(engine, self.jobs.clock)
        self.queues = QueueStore(engine, self.jobs.clock)
        self.nodes = NodeStore(engine, self.jobs.clock)
        self.shipped_logs = LogStore(engine, self.log_cap)
        loop_metrics = self.loop.metrics if self.loop is not None else None
        self.metrics = loop_metrics or ControlPlaneMetrics(engine, self.inventory.clusters)

    def open_log(self, job_id: str, pod: int, attempt: int | None = None) -> LogSource | None:
        """A pod's output in ``attempt`` (None: its latest): from this machine's backend if it ran here,
        else what its agent shipped."""
        local = self.logs(job_id, pod, attempt) if self.logs is not None else None
        return local if local is not None else self.shipped_logs.open(job_id, pod, attempt)

    def inventory_node(self, name: str) -> Node | None:
        return self.catalog().snapshot.nodes.get(name)

    def empty_snapshot(self) -> Snapshot:
        """The inventory with nothing running and the stored queues: "could this job ever run here?"."""
        return self.catalog().snapshot

    def queue(self, name: str) -> QueueConfig | None:
        return self.catalog().queues.get(name)

    def catalog(self) -> Catalog:
        """Queues and the fleet as the store has them, read again after a change through this server
        (``inventory_changed``) or every ``CATALOG_SECONDS`` (changes made through another server)."""
        now = time.monotonic()
        with self._lock:
            if self._catalog is None or now - self._catalog.read_at > CATALOG_SECONDS:
                queues = self.queues.list()
                specs = [queue.spec() for queue in queues] or None
                found = fleet(self.inventory.clusters, self.nodes.registrations())
                snapshot = Snapshot(*found, specs, nodes_may_join=self.inventory.nodes_may_join)
                self._catalog = Catalog(snapshot, {queue.name: queue for queue in queues}, now)
            return self._catalog

    def inventory_changed(self) -> None:
        with self._lock:
            self._catalog = None
        self.changed()

    def changed(self) -> None:
        """Something the scheduler cares about changed: run a round soon."""
        if self.loop is not None:
            self.loop.poke()

    def decisions(self) -> int:
        """A number that changes when the reconcile loop commits a round (0 without a loop here)."""
        return self.loop.decided.version if self.loop is not None else 0

    async def wait_for_decisions(self, seen: int, timeout: float) -> None:
        """Until a round committed after ``decisions()`` said ``seen``, or ``timeout`` seconds; without
        a loop in this process, until it is time to read the store again."""
        if self.loop is None:
            await asyncio.sleep(min(timeout, STORE_WATCH_SECONDS))
        else:
            await self.loop.decided.wait(seen, timeout)

    def authenticate(self, token: str) -> Principal | None:
        now = time.monotonic()
        with self._lock:
            cached = self._principals.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = self.accounts.authenticate(token)
        with self._lock:
            if len(self._principals) > 10_000:
                self._principals.clear()
            if principal is not None:
                self._principals[token] = (principal, now + TOKEN_CACHE_SECONDS)
        return principal

    def forget_token(self, token_id: str) -> None:
        with self._lock:
            for token, (principal, _) in list(self._principals.items()):
                if principal.token_id == token_id:
                    del self._principals[token]


def control_plane(request: Request) -> ControlPlane:
    return request.app.state.control_plane  # type: ignore[no-any-return]
