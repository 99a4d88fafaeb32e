"""Property tests: random small scenarios replayed under every policy keep the scheduler's invariants.

Each property draws a scenario (``strategies.scenarios``), replays it with the simulator and checks the
event log: with the format's own checker (``check_events``), and again directly for the properties that
matter most (privacy, quota, gangs, liveness, preemption, determinism), so that a bug shared by the
scheduler and the checker still shows. On failure the scenario is printed as JSON (``note``).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from strategies import TENTHS, TENTHS_WITH_CHECKPOINTS, Scenario, held_out_scenarios, scenarios

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.workloads import Workload
from corral.scenario.invariants import check_events
from corral.scenario.models import ClusterFile, Event
from corral.scheduling import POLICIES
from corral.sim.engine import SimulationResult, Simulator

ALL_POLICIES = sorted(POLICIES)

# Budgets: the whole file should stay well under a minute on a slow 2-core machine. For a longer hunt,
# scale them: CORRAL_PROPERTY_SCALE=50 pytest tests/test_properties.py
SCALE = float(os.environ.get("CORRAL_PROPERTY_SCALE", "1"))


def _budget(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


FAST = _budget(60)
SLOW = _budget(30)


def replay(scenario: Scenario, policy: str) -> tuple[list[Event], SimulationResult]:
    events: list[Event] = []
    result = Simulator(
        scenario.cluster_file,
        scenario.workloads,
        POLICIES[policy],
        cluster_events=scenario.cluster_events,
        sink=events.append,
    ).run()
    return events, result


def replay_noted(scenario: Scenario, policy: str) -> list[Event]:
    note(f"policy: {policy}")
    note(f"scenario: {scenario.describe()}")
    events, _ = replay(scenario, policy)
    note("log:\n" + "\n".join(str(e.to_json_dict()) for e in events))
    return events


class NodeIndex:
    """Node name ({pool}-{i}, present at time 0 or added later) -> (cluster, private, flavor)."""

    def __init__(self, cluster_file: ClusterFile) -> None:
        self._pools = {
            pool.name: (cluster.name, cluster.private, pool.flavor)
            for cluster in cluster_file.clusters
            for pool in cluster.pools
        }

    def __getitem__(self, node: str) -> tuple[str, bool, str]:
        pool, _, index = node.rpartition("-")
        assert index.isdigit() and pool in self._pools, f"node {node} is of no pool"
        return self._pools[pool]


# -- an independent oracle of "can this job ever run" ---------------------------------------------------


def _pods_per_node(template: NodeTemplate, job: Workload) -> int:
    models = job.allowed_models
    if models is not None and template.gpu_model not in models:
        return 0
    limits = []
    if job.cpu:
        limits.append(math.floor(template.cpu / job.cpu + 1e-9))
    if job.memory_gib:
        limits.append(math.floor(template.memory_gib / job.memory_gib + 1e-9))
    if job.gpus_per_pod and job.gpu_milli == 1000:
        limits.append(template.gpus // job.gpus_per_pod)
    elif job.gpus_per_pod:
        per_gpu = 1000 // job.gpu_milli
        if job.gpu_memory_gib:
            per_gpu = min(per_gpu, math.floor(template.gpu_memory_gib / job.gpu_memory_gib + 1e-9))
        limits.append(template.gpus * per_gpu)
    return min(limits, default=10**6)


def _quota_ceiling(cluster_file: ClusterFile, queue: str, flavor: str) -> float:
    """The most milli-GPU of ``flavor`` the queue may ever hold (everyone else idle)."""
    if cluster_file.queues is None:
        return math.inf
    spec = {q.name: q for q in cluster_file.queues}[queue]
    nominal = round(spec.quota.get(flavor, 0) * 1000)
    if spec.cohort is None:
        return nominal
    cohort = sum(round(q.quota.get(flavor, 0) * 1000) for q in cluster_file.queues if q.cohort == spec.cohort)
    ceiling = cohort
    if spec.borrowing_limit is not None and flavor in spec.borrowing_limit:
        ceiling = min(ceiling, nominal + round(spec.borrowing_limit[flavor] * 1000))
    return max(ceiling, nominal)


def can_ever_run(cluster_file: ClusterFile, job: Workload) -> bool:
    """Whether some (cluster, flavor) could hold the whole gang, on an allowed cluster, within quota."""
    if cluster_file.queues is not None and job.queue not in {q.name for q in cluster_file.queues}:
        return False
    capacity: dict[tuple[str, str], int] = defaultdict(int)
    private: dict[str, bool] = {}
    for cluster in cluster_file.clusters:
        private[cluster.name] = cluster.private
        for pool in cluster.pools:
            capacity[(cluster.name, pool.flavor)] += pool.count * _pods_per_node(pool.node, job)
    demand = job.pods * job.gpus_per_pod * (job.gpu_milli if job.gpus_per_pod else 0)
    return any(
        room >= job.pods
        and (private[cluster] or not (job.sensitive or not job.burstable))
        and demand <= _quota_ceiling(cluster_file, job.queue, flavor)
        for (cluster, flavor), room in capacity.items()
    )


# -- 1. the format's checker accepts every log ------------------------------------------------------------


# Regression (the smallest case hypothesis found, fixed in 58abf01): "low" checkpoints every 0.1 s and is
# preempted after 1 s of work; the simulator kept 0.9 s (1.0 // 0.1 == 9.0), the checker 1.0 s, so "low"
# finished at 3.1, not 3.0, and the log broke invariant 4.
CHECKPOINT_FLOOR_EXAMPLE = Scenario(
    ClusterFile(
        clusters=[
            ClusterSpec(
                name="c0",
                pools=[
                    PoolSpec(
                        name="p",
                        flavor="a100",
                        count=1,
                        node=NodeTemplate(cpu=8, memory_gib=32, gpus=1, gpu_model="A100", gpu_memory_gib=80),
                    )
                ],
            )
        ]
    ),
    [
        Workload(id="low", duration=2.0, gpus_per_pod=1, checkpoint_seconds=0.1),
        Workload(id="high", submit=1.0, duration=1.0, gpus_per_pod=1, priority=1),
    ],
)


def _assert_log_passes(scenario: Scenario, policy: str) -> None:
    events = replay_noted(scenario, policy)
    violation = check_events(scenario.cluster_file, scenario.workloads, events)
    if violation is not None:
        note(f"violation: {violation}")
    assert violation is None, str(violation)


@pytest.mark.parametrize("policy", ALL_POLICIES)
@FAST
@given(scenario=scenarios(churn=True))
def test_event_log_passes_checker(policy: str, scenario: Scenario) -> None:
    _assert_log_passes(scenario, policy)


@pytest.mark.parametrize("policy", ALL_POLICIES)
@SLOW
@given(scenario=scenarios(churn=True, grid=TENTHS))
def test_event_log_passes_checker_with_inexact_times(policy: str, scenario: Scenario) -> None:
    """Times in tenths of a second are not exact in binary: the log's tolerances must absorb that."""
    _assert_log_passes(scenario, policy)


@pytest.mark.parametrize("policy", ["default", "strict-fifo"])
@SLOW
@given(scenario=scenarios(churn=True, grid=TENTHS_WITH_CHECKPOINTS))
@example(scenario=CHECKPOINT_FLOOR_EXAMPLE)
def test_event_log_passes_checker_with_inexact_checkpoints(policy: str, scenario: Scenario) -> None:
    """Checkpoints every 0.1 s: the simulator and the checker must floor the saved progress alike."""
    _assert_log_passes(scenario, policy)


# -- 2. private clusters and quota, checked directly ----------------------------------------------------


@pytest.mark.parametrize("policy", ALL_POLICIES)
@FAST
@given(scenario=scenarios(churn=True))
def test_private_work_and_quota(policy: str, scenario: Scenario) -> None:
    events = replay_noted(scenario, policy)
    jobs = {w.id: w for w in scenario.workloads}
    nodes = NodeIndex(scenario.cluster_file)
    queues = {q.name: q for q in scenario.cluster_file.queues or []}
    for event in events:
        if event.event != "started":
            continue
        job = jobs[event.job or ""]
        if job.sensitive or not job.burstable:
            for placement in event.placements or []:
                cluster, private, _ = nodes[placement.node]
                assert private, (
                    f"{job.id} (sensitive={job.sensitive}, burstable={job.burstable}) runs on {cluster}"
                )

    if scenario.cluster_file.queues is None:
        return
    usage: dict[tuple[str, str], int] = defaultdict(int)
    held: dict[str, list[tuple[str, int]]] = {}

    def check_instant(t: float) -> None:
        cohorts: dict[tuple[str, str], int] = defaultdict(int)
        for (queue, flavor), milli in usage.items():
            spec = queues[queue]
            nominal = round(spec.quota.get(flavor, 0) * 1000)
            if spec.cohort is None:
                assert milli <= nominal, f"t={t}: queue {queue} holds {milli} milli {flavor} > {nominal}"
                continue
            cohorts[(spec.cohort, flavor)] += milli
            if spec.borrowing_limit is not None and flavor in spec.borrowing_limit:
                limit = round(spec.borrowing_limit[flavor] * 1000)
                assert milli <= nominal + limit, (
                    f"t={t}: queue {queue} holds {milli} milli {flavor} > {nominal} + limit {limit}"
                )
        for (cohort, flavor), milli in cohorts.items():
            nominal = sum(round(q.quota.get(flavor, 0) * 1000) for q in queues.values() if q.cohort == cohort)
            assert milli <= nominal, f"t={t}: cohort {cohort} holds {milli} milli {flavor} > {nominal}"

    now = None
    for event in events:
        if now is not None and event.t > now:
            check_instant(now)
        now = event.t
        if event.job is None:
            continue
        job = jobs[event.job]
        if event.event == "started":
            assert job.queue in queues, f"{job.id} of unknown queue {job.queue} started"
            charges = [(nodes[p.node][2], p.gpu_milli * len(p.gpus)) for p in event.placements or []]
            for flavor, milli in charges:
                usage[(job.queue, flavor)] += milli
            held[job.id] = charges
        elif event.event in ("preempted", "finished", "failed") and job.id in held:
            for flavor, milli in held.pop(job.id):
                usage[(job.queue, flavor)] -= milli
    if now is not None:
        check_instant(now)


# -- 3. gangs are atomic --------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL_POLICIES)
@FAST
@given(scenario=scenarios(churn=True))
def test_gangs_start_whole(policy: str, scenario: Scenario) -> None:
    events = replay_noted(scenario, policy)
    jobs = {w.id: w for w in scenario.workloads}
    nodes = NodeIndex(scenario.cluster_file)
    down: set[str] = set()  # down or removed
    for event in events:
        if event.event in ("node_down", "node_removed"):
            down.add(event.node or "")
        elif event.event in ("node_up", "node_added"):
            down.discard(event.node or "")
        elif event.event == "started":
            job = jobs[event.job or ""]
            placements = event.placements or []
            assert len(placements) == job.pods, f"{job.id}: {len(placements)} placements, {job.pods} pods"
            assert sorted(p.pod for p in placements) == list(range(job.pods))
            assert {nodes[p.node][0] for p in placements} == {event.cluster}, f"{job.id} spans clusters"
            for p in placements:
                assert p.node not in down, f"{job.id} placed on {p.node}, which is down"
                assert len(p.gpus) == job.gpus_per_pod
                assert len(set(p.gpus)) == len(p.gpus), f"{job.id} pod {p.pod} holds a GPU twice"


# -- 4. every job ends or waits; what can run does run ----------------------------------------------------


def _check_liveness(scenario: Scenario, policy: str) -> None:
    """Every job that fits the empty cluster finishes, every job that does not is rejected with a reason,
    and the cluster is never left idle (nothing running, every node up) while such a job waits."""
    events = replay_noted(scenario, policy)
    fits = {job.id: can_ever_run(scenario.cluster_file, job) for job in scenario.workloads}
    outcome: dict[str, str] = {}
    reasons: dict[str, str | None] = {}
    running: set[str] = set()
    waiting: set[str] = set()
    down: set[str] = set()

    def check_idle(t: float) -> None:
        if running or down:
            return
        stuck = sorted(job for job in waiting if fits[job])
        assert not stuck, f"t={t}: nothing runs and every node is up, yet {stuck} wait though they fit"

    now = None
    for event in events:
        if now is not None and event.t > now:
            check_idle(now)
        now = event.t
        if event.event == "node_down":
            down.add(event.node or "")
        elif event.event == "node_up":
            down.discard(event.node or "")
        if event.job is None:
            continue
        outcome[event.job] = event.event
        reasons[event.job] = event.reason
        if event.event in ("submitted", "preempted", "failed"):
            running.discard(event.job)
            waiting.add(event.job)
        elif event.event == "started":
            waiting.discard(event.job)
            running.add(event.job)
        else:
            running.discard(event.job)
            waiting.discard(event.job)
    if now is not None:
        check_idle(now)

    for job in scenario.workloads:
        state = outcome.get(job.id)
        if state == "rejected":
            assert reasons[job.id], f"{job.id} rejected without a reason"
            assert not fits[job.id], f"{job.id} rejected ({reasons[job.id]}) though it fits an empty cluster"
        else:
            assert fits[job.id] or state != "finished", f"{job.id} finished, yet the oracle says it cannot"
            assert state == "finished", f"{job.id} fits the empty cluster but ends {state!r}"


@pytest.mark.parametrize("policy", ["default", "spread", "fifo"])
@FAST
@given(scenario=scenarios(failures=None, heal=True))
def test_liveness_best_effort(policy: str, scenario: Scenario) -> None:
    assert scenario.failures_heal
    _check_liveness(scenario, policy)


@FAST
@given(scenario=scenarios(failures=False))
def test_liveness_strict_fifo(scenario: Scenario) -> None:
    _check_liveness(scenario, "strict-fifo")


@SLOW
@given(scenario=scenarios(failures=True, heal=True))
def test_liveness_strict_fifo_with_healed_failures(scenario: Scenario) -> None:
    _check_liveness(scenario, "strict-fifo")


@pytest.mark.parametrize("policy", ALL_POLICIES)
@SLOW
@given(scenario=scenarios(failures=True, heal=False, churn=True))
def test_every_job_ends_or_waits_under_failures(policy: str, scenario: Scenario) -> None:
    """Nodes that never come back may strand jobs, but nothing is left running and nothing ends twice."""
    events = replay_noted(scenario, policy)
    running: set[str] = set()
    ended: set[str] = set()
    for event in events:
        if event.job is None:
            continue
        assert event.job not in ended, f"{event.job}: {event.event} after it ended"
        if event.event == "started":
            running.add(event.job)
        elif event.event in ("preempted", "failed", "finished"):
            running.discard(event.job)
        if event.event in ("finished", "rejected"):
            ended.add(event.job)
    assert not running, f"still running at the end: {sorted(running)}"


@pytest.mark.parametrize("policy", ["fifo", "default"])
@FAST
@given(scenario=scenarios(churn=True))
def test_work_conserving(policy: str, scenario: Scenario) -> None:
    """When an instant ends, no job waits that fits idle private capacity its quota allows: the checker's
    ``work_conserving`` check, which asks the scheduler's fit tests against the log's state (so it
    catches a job the round passed over, not a wrong fit test)."""
    events = replay_noted(scenario, policy)
    violation = check_events(scenario.cluster_file, scenario.workloads, events, work_conserving=True)
    if violation is not None:
        note(f"violation: {violation}")
    assert violation is None, str(violation)


# -- 5. preemption only of lower priority in the preemptor's queue, or of borrowers in its cohort ------


PREEMPTED_BY = re.compile(r"preempted by (\S+?)(?::|\s|$)")
MOVED_FOR = re.compile(r"GPU share moved to make room for (\S+) on \S+")


@pytest.mark.parametrize("policy", ALL_POLICIES)
@FAST
@given(scenario=scenarios(churn=True))
def test_preemption_victims_are_eligible(policy: str, scenario: Scenario) -> None:
    events = replay_noted(scenario, policy)
    jobs = {w.id: w for w in scenario.workloads}
    queues = {q.name: q for q in scenario.cluster_file.queues or []}
    started_at: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.event == "started":
            started_at[event.job or ""].append(event.t)
    for event in events:
        if event.event != "preempted":
            continue
        if POLICIES[policy].preemption is False:
            assert (event.reason or "").startswith("node "), f"{policy} preempts: {event.reason}"
        moved = MOVED_FOR.fullmatch(event.reason or "")
        if moved is not None:
            # Share migration (corral-defrag): the share restarts on another GPU at the same instant.
            assert POLICIES[policy].migrate_shares, f"{policy} moved a share: {event.reason}"
            assert event.t in started_at[event.job or ""] and event.t in started_at[moved.group(1)]
            continue
        match = PREEMPTED_BY.search(event.reason or "")
        if match is None:
            assert re.fullmatch(r"node \S+ (down|removed)", event.reason or ""), event.reason
            continue
        victim, preemptor = jobs[event.job or ""], jobs[match.group(1)]
        assert event.t in started_at[preemptor.id], f"{preemptor.id} preempted {victim.id} but did not start"
        if scenario.cluster_file.queues is None or victim.queue == preemptor.queue:
            assert victim.priority < preemptor.priority, (
                f"{preemptor.id} (queue {preemptor.queue}, priority {preemptor.priority}) preempted "
                f"{victim.id} (queue {victim.queue}, priority {victim.priority})"
            )
        else:
            cohort = queues[preemptor.queue].cohort
            assert cohort is not None and queues[victim.queue].cohort == cohort, (
                f"{preemptor.id} of queue {preemptor.queue} preempted {victim.id} of queue {victim.queue} "
                "outside a shared cohort"
            )


# -- 6. determinism ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL_POLICIES)
@SLOW
@given(scenario=scenarios(churn=True))
def test_replay_is_deterministic(policy: str, scenario: Scenario) -> None:
    note(f"policy: {policy}")
    note(f"scenario: {scenario.describe()}")
    first, first_result = replay(scenario, policy)
    second, second_result = replay(scenario, policy)
    assert [e.to_json_dict() for e in first] == [e.to_json_dict() for e in second]
    timing = {"scheduler_seconds", "forecast_seconds"}  # wall-clock times: the only things allowed to differ
    assert first_result.summary.model_dump(exclude=timing) == second_result.summary.model_dump(exclude=timing)
    assert first_result.pending.keys() == second_result.pending.keys()


@pytest.mark.parametrize("policy", ["random", "default"])
def test_replay_does_not_depend_on_string_hashing(policy: str, tmp_path: Path) -> None:
    """Two processes with different hash seeds replay the demo alike: set order must never reach a decision."""
    demo = Path(__file__).parent.parent / "examples" / "demo"
    logs = []
    for hash_seed in ("1", "5"):
        events = tmp_path / f"events-{hash_seed}.jsonl"
        command = [
            sys.executable,
            "-m",
            "corral",
            "sim",
            str(demo / "cluster.yaml"),
            str(demo / "workload.jsonl"),
        ]
        command += [
            "--policy",
            policy,
            "--failures",
            str(demo / "failures.jsonl"),
            "--events",
            str(events),
            "-q",
        ]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=120)
        logs.append(events.read_text())
    assert logs[0] == logs[1]


# -- held-out shapes: tiny and zero quotas, a priority ladder, wrong time limits, arrivals at t=0 --------


@pytest.mark.parametrize("policy", ["default", "fifo"])
@_budget(20)
@given(scenario=held_out_scenarios())
def test_held_out_shapes_pass_every_check(policy: str, scenario: Scenario) -> None:
    """The shapes benchmarks/heldout.py replays, drawn at random: the log passes `corral check` with the
    work-conserving invariant, no run is preempted at the instant it started and no job twice at one
    instant (a node going down is not the scheduler's preemption)."""
    events = replay_noted(scenario, policy)
    violation = check_events(scenario.cluster_file, scenario.workloads, events, work_conserving=True)
    assert violation is None, str(violation)
    last_start: dict[str | None, float] = {}
    preempted = []
    for event in events:
        if event.event == "started":
            last_start[event.job] = event.t
        elif event.event == "preempted" and "down" not in (event.reason or ""):
            assert last_start[event.job] != event.t, f"{event.job} was preempted at the instant it started"
            preempted.append((event.job, event.t))
    assert len(preempted) == len(set(preempted)), "a job was preempted twice at one instant"
