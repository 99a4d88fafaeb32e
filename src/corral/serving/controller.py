"""The service controller: makes each service's replicas (corral jobs) match what its traffic needs.

Every tick (a quarter second, or at once when a request is held or a spec applied; 5 s without any
service) it reads the services and their replicas' jobs from the store, and for each service:

1. forgets replicas whose jobs ended; one that ended without being stopped counts as a failure of its
   revision;
2. probes the readiness path of replicas whose jobs run, until they answer; a replica not ready within
   ``readiness.timeout`` of its start is stopped and counts as a failure;
3. promotes or rolls back the canary (``rollout.rollout_step``);
4. asks the autoscaler (``autoscaler.decide``) how many replicas the traffic needs, splits them between
   the revisions, submits new replica jobs, and drains surplus ones: out of the rotation first, stopped
   once the requests they answer are done;
5. gives the gateway the ready replicas and the traffic split.

It never places anything: a replica is a job like any other, which the reconcile loop schedules (and
for which it may preempt lower-priority work). Each replica is told its secret in
``CORRAL_REPLICA_TOKEN``; its port is chosen where it runs, by the backend that starts its pod, just
before the start (``JobSpec.listen_port``: free on that node, told in ``PORT``), and reported with the
start. It is reached at its node's address (the one its agent, or the Ray backend, reported, or
loopback for the server's own nodes; pods are told it in ``CORRAL_NODE_ADDRESS`` to listen on) and
that port: a replica whose port is not known yet is neither probed nor routed to.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from corral.serving.autoscaler import Sample, ScalerState, decide
from corral.serving.gateway import REPLICA_TOKEN_HEADER, Endpoint, Gateway, ServiceKey
from corral.serving.models import ModelResolver, runtime_command, runtime_environment, shipped
from corral.serving.rollout import (
    ReplicaView,
    RevisionHealth,
    choose_removals,
    rollout_step,
    split_replicas,
    traffic_split,
)
from corral.store.jobs import ENDED, JobAlreadyEnded, JobNotFound, JobStore
from corral.store.services import Replica, ServiceNotFound, ServiceRecord, ServiceStore

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
IDLE_SECONDS = 5.0
"""Between ticks of a server without services (applying one wakes the controller at once)."""
PROBE_TIMEOUT = 1.0
DRAIN_SECONDS = 30.0
"""A draining replica is stopped when its last request is answered, or after this long."""
LOOPBACK = "127.0.0.1"
"""Where replicas on the server's own nodes (and nodes without an agent's address) are reached."""
ALIAS_SECONDS = 10.0
"""How often the registry is asked where each ``models:/NAME@ALIAS`` points now (``alias_moved``: at once)."""


@dataclass
class ServiceState:
    """What the controller remembers about one service between ticks (memory only: a restarted server
    probes its replicas again and starts the windows afresh)."""

    samples: deque[Sample] = field(default_factory=deque)
    scaler: ScalerState = field(default_factory=ScalerState)
    ready: dict[str, float] = field(default_factory=dict)
    """Replicas (job ids) that passed readiness, and when."""
    draining: dict[str, float] = field(default_factory=dict)
    """Replicas out of the rotation, and since when."""
    failures: dict[int, int] = field(default_factory=dict)
    """Failed replicas per revision."""
    desired: int = 0


class ServiceController:
    def __init__(
        self,
        services: ServiceStore,
        jobs: JobStore,
        gateway: Gateway,
        poke: Callable[[], None],
        resolver: ModelResolver | None = None,
        clock: Callable[[], float] = time.time,
        tick: float = TICK_SECONDS,
    ) -> None:
        """``poke``: wake the reconcile loop (a replica was submitted or cancelled)."""
        self.services = services
        self.jobs = jobs
        self.gateway = gateway
        self.poke = poke
        self.resolver = resolver
        self.clock = clock
        self.tick = tick
        self.states: dict[str, ServiceState] = {}
        self.probe = httpx.AsyncClient(timeout=PROBE_TIMEOUT)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._aliases_checked = -float("inf")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.probe.aclose()

    def wake(self, _: ServiceKey | None = None) -> None:
        """Run a tick now: a request is held, or a replica failed."""
        self._wake.set()

    def alias_moved(self) -> None:
        """A model alias moved (the registry says so): look at every registry service at once."""
        self._aliases_checked = -float("inf")
        self.wake()

    def replica_failed(self, key: ServiceKey, job_id: str) -> None:
        """The gateway could not connect: out of the ready set until a probe answers again."""
        for state in self.states.values():
            state.ready.pop(job_id, None)
        self.wake()

    async def _run(self) -> None:
        while True:
            busy = True
            try:
                busy = await self.step()
            except Exception:
                log.exception("service controller tick failed; trying again")
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick if busy else IDLE_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()

    async def step(self) -> bool:
        """One tick over every service (see the module docstring); False when there is none."""
        services, replicas = await asyncio.to_thread(lambda: (self.services.list(), self.services.replicas()))
        by_service: dict[str, list[Replica]] = {}
        for replica in replicas:
            by_service.setdefault(replica.service_id, []).append(replica)
        live = {s.id for s in services}
        for service_id in list(self.states):
            if service_id not in live:
                del self.states[service_id]
        for key in [k for k in self.gateway.routes if k not in {(s.tenant, s.name) for s in services}]:
            self.gateway.forget(key)
        if self.resolver is not None and time.monotonic() - self._aliases_checked >= ALIAS_SECONDS:
            self._aliases_checked = time.monotonic()
            services = await asyncio.to_thread(self._follow_aliases, services)
        for service in services:
            state = self.states.setdefault(
                service.id, ServiceState(scaler=ScalerState(last_busy=self.clock()))
            )
            await self._reconcile(service, by_service.get(service.id, []), state)
        return bool(services or replicas)

    def _follow_aliases(self, services: list[ServiceRecord]) -> list[ServiceRecord]:
        """A new revision (a canary, as for a changed spec) for each service whose alias moved."""
        assert self.resolver is not None
        followed = []
        for service in services:
            newest = service.revisions[-1]
            if service.spec.from_registry and service.spec.model is not None:
                try:
                    model = self.resolver.resolve(service.tenant, service.spec.model)
                except LookupError as error:
                    log.warning("service %s/%s: %s", service.tenant, service.name, error)
                else:
                    if model.version != newest.model_version:
                        log.info(
                            "service %s/%s: %s is version %s now",
                            service.tenant,
                            service.name,
                            service.spec.model,
                            model.version,
                        )
                        service = self.services.apply(
                            service.tenant, service.spec, (model.version, model.path)
                        ).service
            followed.append(service)
        return followed

    async def _reconcile(self, service: ServiceRecord, replicas: list[Replica], state: ServiceState) -> None:
        now = self.clock()
        key = (service.tenant, service.name)
        alive = await self._forget_ended(replicas, state)
        for replica in alive:
            if replica.status != "running":
                state.ready.pop(replica.job_id, None)  # preempted: it must pass readiness again
        await self._probe(service, alive, state, now)
        service = await self._roll_out(service, alive, state, now, key)

        route = self.gateway.route(key)
        spec = service.spec
        state.samples.append(Sample(now, self.gateway.sample(key)))
        while state.samples and state.samples[0].t <= now - spec.autoscaling.stable_window:
            state.samples.popleft()
        serving = [
            r
            for r in alive
            if r.job_id not in state.draining and r.revision in (service.stable, service.canary)
        ]
        decision = decide(
            list(state.samples),
            now,
            ready=sum(1 for r in serving if r.job_id in state.ready),
            current=len(serving),
            held=route.held,
            config=spec.autoscaling,
            bounds=spec.replicas,
            state=state.scaler,
        )
        state.scaler, state.desired = decision.state, decision.replicas
        stable_count, canary_count = split_replicas(
            decision.replicas, spec.canary, service.canary is not None
        )
        for revision, count in ((service.stable, stable_count), (service.canary, canary_count)):
            if revision is not None:
                await self._scale(
                    service, revision, count, [r for r in serving if r.revision == revision], state
                )
        stable_serves = any(r.revision == service.stable and r.job_id in state.ready for r in alive)
        for replica in alive:
            # A promoted revision that is not ready yet: the old one's ready replicas keep answering.
            retired = replica.revision not in (service.stable, service.canary)
            if retired and (stable_serves or replica.job_id not in state.ready):
                state.draining.setdefault(replica.job_id, now)
        await self._stop_drained(key, alive, state, now)

        ready = [r for r in alive if r.job_id in state.ready and r.job_id not in state.draining]
        stable_ready = sum(1 for r in ready if r.revision == service.stable)
        canary_ready = sum(1 for r in ready if r.revision == service.canary)
        _, canary_share = traffic_split(stable_ready, canary_ready, spec.canary)
        endpoints = [Endpoint(r.job_id, r.revision, replica_url(r), r.secret) for r in ready]
        starting = sum(1 for r in alive if r.job_id not in state.ready and r.job_id not in state.draining)
        self.gateway.update(key, endpoints, service.stable, service.canary, canary_share, starting)

    async def _forget_ended(self, replicas: list[Replica], state: ServiceState) -> list[Replica]:
        alive = []
        for replica in replicas:
            if replica.status not in ENDED:
                alive.append(replica)
                continue
            if replica.job_id not in state.draining:
                state.failures[replica.revision] = state.failures.get(replica.revision, 0) + 1
                log.warning(
                    "replica %s ended on its own (%s): %s", replica.job_id, replica.status, replica.reason
                )
            state.ready.pop(replica.job_id, None)
            state.draining.pop(replica.job_id, None)
            await asyncio.to_thread(self.services.forget_replica, replica.job_id)
        return alive

    async def _probe(
        self, service: ServiceRecord, alive: list[Replica], state: ServiceState, now: float
    ) -> None:
        waiting = [
            r
            for r in alive
            if r.status == "running"
            and r.port is not None
            and r.job_id not in state.ready
            and r.job_id not in state.draining
        ]
        unreported = [
            r for r in alive if r.status == "running" and r.port is None and r.job_id not in state.draining
        ]
        for replica in unreported:  # its node never said where it listens: as good as not ready
            await self._fail_unready(service, replica, state, now)
        if not waiting:
            return
        answers = await asyncio.gather(*(self._ready(service, r) for r in waiting))
        for replica, ready in zip(waiting, answers, strict=True):
            if ready:
                state.ready[replica.job_id] = now
            else:
                await self._fail_unready(service, replica, state, now)

    async def _fail_unready(
        self, service: ServiceRecord, replica: Replica, state: ServiceState, now: float
    ) -> None:
        """Stop a replica not ready within its revision's ``readiness.timeout`` of its start: a failure."""
        revision = service.revision(replica.revision)
        timeout = (revision.spec if revision else service.spec).readiness.timeout
        if replica.started_at is not None and now - replica.started_at > timeout:
            state.failures[replica.revision] = state.failures.get(replica.revision, 0) + 1
            state.draining[replica.job_id] = now
            await self._cancel(replica.job_id, f"not ready within {timeout:g}s (readiness probe)")

    async def _ready(self, service: ServiceRecord, replica: Replica) -> bool:
        revision = service.revision(replica.revision)
        path = (revision.spec if revision else service.spec).readiness.path
        headers = {REPLICA_TOKEN_HEADER: replica.secret} if replica.secret else None
        try:
            response = await self.probe.get(replica_url(replica) + path, headers=headers)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 400

    async def _roll_out(
        self, service: ServiceRecord, alive: list[Replica], state: ServiceState, now: float, key: ServiceKey
    ) -> ServiceRecord:
        if service.canary is None:
            return service
        step = rollout_step(
            self._health(key, service.stable, alive, state) if service.stable is not None else None,
            self._health(key, service.canary, alive, state),
            service.spec.canary,
            service.spec.promote_after,
            now,
        )
        if step.verdict == "wait":
            return service
        if step.verdict == "promote":
            await asyncio.to_thread(self.services.promote, service.id, step.reason)
        else:
            await asyncio.to_thread(self.services.roll_back, service.id, step.reason)
        log.info("service %s/%s: %s (%s)", *key, step.verdict, step.reason)
        return await asyncio.to_thread(self.services.get_by_id, service.id)

    def _health(
        self, key: ServiceKey, revision: int, alive: list[Replica], state: ServiceState
    ) -> RevisionHealth:
        ready = [state.ready[r.job_id] for r in alive if r.revision == revision and r.job_id in state.ready]
        counts = self.gateway.counts(key, revision)
        return RevisionHealth(
            revision,
            len(ready),
            state.failures.get(revision, 0),
            counts.requests,
            counts.errors,
            min(ready, default=None),
        )

    async def _scale(
        self, service: ServiceRecord, revision: int, count: int, current: list[Replica], state: ServiceState
    ) -> None:
        now = self.clock()
        if len(current) > count:
            views = [
                ReplicaView(r.job_id, r.status == "running", r.job_id in state.ready, r.created_at)
                for r in current
            ]
            for job_id in choose_removals(views, count):
                state.draining[job_id] = now
            return
        for _ in range(count - len(current)):
            await asyncio.to_thread(self._submit, service, revision)
        if count > len(current):
            self.poke()

    def _submit(self, service: ServiceRecord, number: int) -> None:
        revision = service.revision(number) or service.revisions[-1]
        spec = revision.spec
        secret = secrets.token_urlsafe(32)
        if spec.command is not None:
            job = spec.replica_job(number, spec.command)
        else:
            job = spec.replica_job(number, runtime_command(spec, revision.model_path))
            job = job.model_copy(update={"env": {**runtime_environment(), **job.env}})
            if spec.from_registry and shipped(revision.model_path):
                job = job.model_copy(update={"code": revision.model_path, "workdir": None})
        job = job.model_copy(update={"env": {**job.env, "CORRAL_REPLICA_TOKEN": secret}})
        record = self.jobs.submit(job, tenant=service.tenant)
        try:
            self.services.add_replica(service.id, number, record.id, secret)
        except ServiceNotFound:  # removed while this tick ran: its replica must not run on forever
            self.jobs.cancel(record.id, f"service {service.tenant}/{service.name} removed")
            return
        log.info("service %s/%s revision %d: replica %s", service.tenant, service.name, number, record.id)

    async def _stop_drained(
        self, key: ServiceKey, alive: list[Replica], state: ServiceState, now: float
    ) -> None:
        stopped = False
        for replica in alive:
            since = state.draining.get(replica.job_id)
            if since is None:
                continue
            idle = self.gateway.outstanding(key, replica.job_id) == 0
            if replica.status != "running" or idle or now - since > DRAIN_SECONDS:
                state.ready.pop(replica.job_id, None)
                await self._cancel(replica.job_id, "scaled down")
                stopped = True
        if stopped:
            self.poke()

    async def _cancel(self, job_id: str, reason: str) -> None:
        try:
            await asyncio.to_thread(self.jobs.cancel, job_id, reason)
        except (JobAlreadyEnded, JobNotFound):
            pass


def replica_url(replica: Replica) -> str:
    """Where the gateway reaches the replica (whose port is known): its node's address (an agent's;
    IPv6 in brackets), else loopback, and the port its pod was given there."""
    host = replica.address or LOOPBACK
    return f"http://[{host}]:{replica.port}" if ":" in host else f"http://{host}:{replica.port}"
