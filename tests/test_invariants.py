"""The invariant checker: a sound log passes, and each invariant broken once is named with its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.scenario.invariants import Violation, audit_events, check_events, check_files
from corral.scenario.io import write_cluster_file, write_events, write_workload
from corral.scenario.models import ClusterFile, Event

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "examples"

A100 = NodeTemplate(cpu=16, memory_gib=64, gpus=2, gpu_model="A100", gpu_memory_gib=40)
H100 = NodeTemplate(cpu=16, memory_gib=64, gpus=2, gpu_model="H100", gpu_memory_gib=80)

# Private: gpu-0, gpu-1 (2 x A100 each), cpu-0 (8 CPU). Public: cloud-h100-0, growing to 3 nodes.
CLUSTER = ClusterFile(
    clusters=[
        ClusterSpec(
            name="onprem",
            private=True,
            pools=[
                PoolSpec(name="gpu", flavor="a100", count=2, node=A100),
                PoolSpec(name="cpu", flavor="cpu", count=1, node=NodeTemplate(cpu=8, memory_gib=32)),
            ],
        ),
        ClusterSpec(
            name="cloud",
            private=False,
            pools=[PoolSpec(name="cloud-h100", flavor="h100", count=1, max_count=3, node=H100)],
        ),
    ],
    # Cohort c lends 3 A100s: a may hold 2 + 1 borrowed, b 1 + any idle; solo has 1 and nobody to borrow from.
    queues=[
        QueueSpec(name="a", cohort="c", quota={"a100": 2, "h100": 2}, borrowing_limit={"a100": 1}),
        QueueSpec(name="b", cohort="c", quota={"a100": 1}),
        QueueSpec(name="solo", quota={"a100": 1}),
    ],
)


def _job(job_id: str, queue: str = "a", **fields: Any) -> Workload:
    shape: dict[str, Any] = {"duration": 10.0, "gpus_per_pod": 1, "cpu": 2, "memory_gib": 8}
    return Workload(id=job_id, queue=queue, **(shape | fields))


WORKLOADS = [
    _job("whole", duration=100.0, checkpoint_seconds=30.0),
    _job("whole2"),
    _job("gang", pods=2, duration=50.0),
    _job("share1", "b", gpu_milli=500, gpu_memory_gib=20),
    _job("share2", "b", gpu_milli=500, gpu_memory_gib=20),
    _job("fat", "b", gpu_milli=250, gpu_memory_gib=30),
    _job("b1", "b"),
    _job("b2", "b"),
    _job("secret", "b", sensitive=True),
    _job("solo1", "solo"),
    _job("solo2", "solo"),
    _job("h100", gpu_model="H100"),
    _job("big", "b", gpus_per_pod=0, gpu_milli=0, cpu=12),
    _job("stray", "nowhere"),
]
SPECS = {w.id: w for w in WORKLOADS}


def sub(t: float, job: str) -> Event:
    return Event(t=t, job=job, event="submitted")


def ev(t: float, job: str, kind: str) -> Event:
    return Event(t=t, job=job, event=kind)


def node(t: float, kind: str, name: str) -> Event:
    return Event(t=t, node=name, event=kind)


def start(
    t: float, job: str, *where: tuple[str, list[int]], cluster: str | None = None, **override: Any
) -> Event:
    """One pod per (node, gpus), each holding exactly what the job asks unless ``override`` says otherwise."""
    spec = SPECS[job]
    request = {
        "gpu_milli": spec.gpu_milli,
        "gpu_memory_gib": spec.gpu_memory_gib,
        "cpu": spec.cpu,
        "memory_gib": spec.memory_gib,
    }
    placements = [
        {"pod": i, "node": n, "gpus": gpus} | request | override for i, (n, gpus) in enumerate(where)
    ]
    return Event(t=t, job=job, event="started", cluster=cluster, placements=placements)


def check(events: list[Event]) -> Violation | None:
    return check_events(CLUSTER, WORKLOADS, events)


def test_spec_example_has_no_violation() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} is absent")
    found = check_files(EXAMPLES / "cluster.yaml", EXAMPLES / "workload.jsonl", EXAMPLES / "events.jsonl")
    assert found is None, str(found)


def test_hand_made_log_with_sharing_preemption_and_node_churn_passes() -> None:
    events = [
        sub(0, "whole"),
        start(0, "whole", ("gpu-0", [0])),
        sub(0, "share1"),
        start(0, "share1", ("gpu-0", [1])),
        sub(0, "share2"),
        start(0, "share2", ("gpu-0", [1])),  # 500 + 500 milli and 20 + 20 GiB: GPU 1 exactly full
        ev(10, "share1", "finished"),
        ev(10, "share2", "finished"),
        ev(70, "whole", "preempted"),  # 70 s run, 30 s checkpoints: 60 s saved
        start(70, "whole", ("gpu-1", [0])),
        node(80, "node_down", "gpu-1"),
        ev(80, "whole", "preempted"),  # 10 s more: still 60 s saved
        start(80, "whole", ("gpu-0", [0])),
        node(90, "node_added", "cloud-h100-1"),
        sub(90, "h100"),
        start(90, "h100", ("cloud-h100-1", [1]), cluster="cloud"),
        ev(100, "h100", "finished"),
        node(100, "node_removed", "cloud-h100-1"),
        ev(120, "whole", "finished"),  # 80 + (100 - 60)
        node(130, "node_up", "gpu-1"),
        sub(130, "gang"),
        start(130, "gang", ("gpu-0", [0]), ("gpu-1", [0])),
        ev(180, "gang", "finished"),
        sub(180, "secret"),
        start(180, "secret", ("gpu-1", [1])),
        ev(185, "secret", "failed"),  # no checkpoints: starts over
        start(185, "secret", ("gpu-1", [1])),
        ev(195, "secret", "finished"),
        sub(195, "solo1"),
        start(195, "solo1", ("gpu-0", [0])),
        sub(200, "solo2"),
        start(200, "solo2", ("gpu-0", [1])),  # over solo's quota until the preemption below, same instant
        ev(200, "solo1", "preempted"),
        ev(210, "solo2", "finished"),
        sub(210, "big"),
        start(210, "big", ("gpu-1", [])),
        ev(220, "big", "finished"),
        sub(220, "stray"),
        ev(220, "stray", "rejected"),
    ]
    assert check(events) is None  # solo1 is left waiting, which is fine


def test_capacity_violation_names_gpu_node_and_jobs() -> None:
    found = check(
        [
            sub(0, "whole"),
            start(0, "whole", ("gpu-0", [0])),
            sub(1, "solo1"),
            start(1, "solo1", ("gpu-0", [0])),
        ]
    )
    assert found is not None
    assert (found.invariant, found.line, found.t, found.job) == (1, 4, 1, "solo1")
    assert found.message == "GPU 0 of node gpu-0 holds 2000 milli-GPU > 1000 (jobs solo1, whole)"
    assert str(found).startswith("line 4, t=1: invariant 1 (capacity): GPU 0 of node gpu-0")


BROKEN: dict[str, tuple[list[Event], int, int | None]] = {
    # 0: the log itself
    "time goes backwards": ([sub(5, "whole"), sub(4, "gang")], 0, 2),
    "unknown job": ([sub(0, "ghost")], 0, 1),
    "unknown node": ([node(0, "node_down", "gpu-9")], 0, 1),
    "node of no pool": ([node(0, "node_added", "tpu-0")], 0, 1),
    "started twice": (
        [sub(0, "whole"), start(0, "whole", ("gpu-0", [0])), start(1, "whole", ("gpu-1", [0]))],
        0,
        3,
    ),
    "preempted while waiting": ([sub(0, "whole"), ev(1, "whole", "preempted")], 0, 2),
    # 1: capacity
    "GPU memory": (
        [
            sub(0, "share1"),
            start(0, "share1", ("gpu-0", [1])),
            sub(0, "fat"),
            start(0, "fat", ("gpu-0", [1])),
        ],
        1,
        4,
    ),
    "node CPU": ([sub(0, "big"), start(0, "big", ("cpu-0", []))], 1, 2),
    "GPU the node lacks": ([sub(0, "whole"), start(0, "whole", ("gpu-0", [5]))], 1, 2),
    # 2: gangs, requests and live nodes
    "gang missing a pod": ([sub(0, "gang"), start(0, "gang", ("gpu-0", [0]))], 2, 2),
    "node does not exist": ([sub(0, "whole"), start(0, "whole", ("gpu-7", [0]))], 2, 2),
    "node is down": (
        [node(0, "node_down", "gpu-1"), sub(0, "whole"), start(0, "whole", ("gpu-1", [0]))],
        2,
        3,
    ),
    "removed node": (
        [node(0, "node_removed", "gpu-1"), sub(0, "whole"), start(0, "whole", ("gpu-1", [0]))],
        2,
        3,
    ),
    "request differs": ([sub(0, "whole"), start(0, "whole", ("gpu-0", [0]), cpu=3)], 2, 2),
    "wrong GPU model": ([sub(0, "h100"), start(0, "h100", ("gpu-0", [0]))], 2, 2),
    "gang across clusters": ([sub(0, "gang"), start(0, "gang", ("gpu-0", [0]), ("cloud-h100-0", [0]))], 2, 2),
    "cluster field disagrees": ([sub(0, "whole"), start(0, "whole", ("gpu-0", [0]), cluster="cloud")], 2, 2),
    "work left on a failed node": (
        [sub(0, "whole"), start(0, "whole", ("gpu-1", [0])), node(5, "node_down", "gpu-1"), sub(6, "gang")],
        2,
        3,
    ),
    "failed node at end of log": (
        [sub(0, "whole"), start(0, "whole", ("gpu-1", [0])), node(5, "node_down", "gpu-1")],
        2,
        3,
    ),
    # 3: private clusters
    "sensitive job in the cloud": ([sub(0, "secret"), start(0, "secret", ("cloud-h100-0", [0]))], 3, 2),
    # 4: run time
    "finished early": (
        [sub(0, "whole"), start(0, "whole", ("gpu-0", [0])), ev(99, "whole", "finished")],
        4,
        3,
    ),
    "checkpoint not honoured": (
        [
            sub(0, "whole"),
            start(0, "whole", ("gpu-0", [0])),
            ev(70, "whole", "preempted"),  # 60 s saved, 40 s left: due at 110
            start(70, "whole", ("gpu-0", [0])),
            ev(120, "whole", "finished"),
        ],
        4,
        5,
    ),
    "started after finishing": (
        [
            sub(0, "b1"),
            start(0, "b1", ("gpu-0", [0])),
            ev(10, "b1", "finished"),
            start(10, "b1", ("gpu-0", [0])),
        ],
        4,
        4,
    ),
    # 5: quota, judged when the instant ends, at the start that raised it
    "queue over quota, no cohort": (
        [
            sub(0, "solo1"),
            start(0, "solo1", ("gpu-0", [0])),
            sub(0, "solo2"),
            start(0, "solo2", ("gpu-0", [1])),
            sub(1, "b1"),
        ],
        5,
        4,
    ),
    "queue over its borrowing limit": (
        [
            sub(0, "gang"),
            start(0, "gang", ("gpu-0", [0]), ("gpu-0", [1])),
            sub(0, "whole"),
            start(0, "whole", ("gpu-1", [0])),
            sub(0, "whole2"),
            start(0, "whole2", ("gpu-1", [1])),  # a holds 4 > 2 + 1
        ],
        5,
        6,
    ),
    "cohort lends more than it has": (
        [
            sub(0, "b1"),
            start(0, "b1", ("gpu-0", [0])),
            sub(0, "b2"),
            start(0, "b2", ("gpu-0", [1])),  # b borrows 1: fine while a is idle
            sub(5, "whole"),
            start(5, "whole", ("gpu-1", [0])),
            sub(5, "whole2"),
            start(5, "whole2", ("gpu-1", [1])),  # a holds 2 (its own), cohort 4 > 3
        ],
        5,
        8,
    ),
    "queue not in the cluster file": ([sub(0, "stray"), start(0, "stray", ("gpu-0", [0]))], 5, 2),
    # 6: completion and lifecycle
    "still running at the end": ([sub(0, "whole"), start(0, "whole", ("gpu-0", [0]))], 6, None),
    "started before submitted": ([start(0, "whole", ("gpu-0", [0]))], 6, 1),
    "event after finished": (
        [sub(0, "b1"), start(0, "b1", ("gpu-0", [0])), ev(10, "b1", "finished"), ev(10, "b1", "preempted")],
        6,
        4,
    ),
}


@pytest.mark.parametrize(("events", "invariant", "line"), BROKEN.values(), ids=BROKEN.keys())
def test_each_broken_invariant_is_named_with_its_line(
    events: list[Event], invariant: int, line: int | None
) -> None:
    found = check(events)
    assert found is not None
    assert (found.invariant, found.line) == (invariant, line), str(found)


def test_check_files_reads_the_three_files(tmp_path: Path) -> None:
    write_cluster_file(tmp_path / "cluster.yaml", CLUSTER)
    write_workload(tmp_path / "workload.jsonl", WORKLOADS)
    events = [sub(0, "whole"), start(0, "whole", ("gpu-0", [0])), ev(100, "whole", "finished")]
    write_events(tmp_path / "events.jsonl", events)
    paths = (tmp_path / "cluster.yaml", tmp_path / "workload.jsonl", tmp_path / "events.jsonl")
    assert check_files(*paths) is None

    write_events(tmp_path / "events.jsonl", events[:2])
    found = check_files(*paths)
    assert found is not None and (found.invariant, found.line, found.job) == (6, None, "whole")

    with open(tmp_path / "events.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    found = check_files(*paths)
    assert found is not None and (found.invariant, found.line) == (0, 3)


# -- truncated logs ----------------------------------------------------------------------------------------

CUT_SHORT = [
    sub(0, "whole"),
    start(0, "whole", ("gpu-0", [0])),
    sub(5, "b1"),
    start(5, "b1", ("gpu-1", [0])),
    sub(5, "solo1"),
    start(5, "solo1", ("gpu-1", [1])),
    sub(6, "solo2"),  # solo's one GPU is taken: solo2 waits
    ev(15, "b1", "finished"),
]


def test_a_truncated_log_reports_what_runs_and_waits_at_its_end() -> None:
    report = audit_events(CLUSTER, WORKLOADS, CUT_SHORT, truncated=True)
    assert report.violation is None
    assert (report.end_t, report.running, report.waiting) == (15, ("whole", "solo1"), ("solo2",))


def test_a_complete_log_still_may_not_end_with_a_job_running() -> None:
    found = check(CUT_SHORT)
    assert found is not None and (found.invariant, found.line, found.job) == (6, None, "whole")


def test_a_truncated_log_may_end_mid_instant() -> None:
    """Cut between a node loss and its preemption, or a start and the release that makes room for it."""
    lost = CUT_SHORT + [node(20, "node_down", "gpu-0")]
    assert check_events(CLUSTER, WORKLOADS, lost, truncated=True) is None
    over = CUT_SHORT + [start(20, "solo2", ("gpu-0", [1]))]  # solo1's preemption would come next
    assert check_events(CLUSTER, WORKLOADS, over, truncated=True) is None
    found = check_events(CLUSTER, WORKLOADS, over + [ev(30, "solo2", "preempted")], truncated=True)
    assert found is not None and (found.invariant, found.line) == (5, 9), str(found)


def test_a_truncated_log_is_judged_up_to_its_last_instant() -> None:
    found = check_events(CLUSTER, WORKLOADS, CUT_SHORT + [ev(15, "whole", "finished")], truncated=True)
    assert found is not None and (found.invariant, found.line) == (4, 9), str(found)


# -- work conserving ---------------------------------------------------------------------------------------


def conserving(events: list[Event], workloads: list[Workload] = WORKLOADS) -> Violation | None:
    return check_events(CLUSTER, workloads, events, work_conserving=True)


def test_a_job_left_waiting_beside_an_idle_gpu_is_named_with_the_block_it_fits() -> None:
    events = [sub(0, "whole"), start(0, "whole", ("gpu-0", [0])), sub(0, "whole2"), sub(3, "b1")]
    found = conserving(events)
    assert found is not None
    assert (found.invariant, found.line, found.t, found.job) == (7, 3, 0, "whole2"), str(found)
    assert "pod 0 on gpu-0 GPUs [1]" in found.message
    assert conserving(events[:3] + [ev(0, "whole2", "rejected"), ev(100, "whole", "finished")]) is None


def test_waiting_for_quota_for_a_public_cluster_or_the_end_of_an_instant_is_allowed() -> None:
    events = [
        sub(0, "solo1"),
        start(0, "solo1", ("gpu-0", [0])),
        sub(0, "solo2"),  # solo holds its whole quota and has no cohort
        sub(0, "h100"),  # fits only the public cloud: not judged
        sub(1, "whole"),
        ev(1, "solo1", "failed"),  # room freed and taken again within the instant
        start(1, "whole", ("gpu-0", [0])),
        start(1, "solo2", ("gpu-0", [1])),
        ev(11, "whole", "preempted"),
        start(11, "whole", ("gpu-1", [0])),  # requeued and restarted at one instant
        ev(11, "solo2", "finished"),
        start(11, "solo1", ("gpu-0", [1])),
        ev(21, "solo1", "finished"),
        ev(111, "whole", "finished"),
    ]
    assert conserving(events) is None


def test_the_check_follows_nodes_going_down_and_away() -> None:
    events = [
        sub(0, "gang"),
        start(0, "gang", ("gpu-0", [0]), ("gpu-1", [0])),
        node(5, "node_removed", "gpu-1"),
        ev(5, "gang", "preempted"),
        node(5, "node_down", "gpu-0"),  # no room left for the gang anywhere: it may wait
        node(9, "node_up", "gpu-0"),  # room for both pods again
    ]
    found = conserving(events)
    assert found is not None and (found.invariant, found.t, found.job) == (7, 9, "gang"), str(found)
    restarted = [start(9, "gang", ("gpu-0", [0]), ("gpu-0", [1])), ev(59, "gang", "finished")]
    assert conserving(events + restarted) is None


def _reserved(t: float, job: str, until: float, *where: tuple[str, list[int]]) -> Event:
    """Placements as a start would write them: each pod holding what the job asks."""
    return Event(t=t, job=job, event="reserved", until=until, placements=start(t, job, *where).placements)


@pytest.mark.parametrize(
    ("time_limit", "violated"),
    [(None, False), (15.0, False), (10.0, True)],
    ids=["no-time-limit", "may-run-past-the-reservation", "ends-before-it"],
)
def test_reserved_capacity_is_idle_only_for_jobs_that_end_before_the_reservation(
    time_limit: float | None, violated: bool
) -> None:
    """The gang waits for cohort quota and holds gpu-0 until t=20; whole2 fits there from t=10."""
    quick = _job("quick", time_limit=time_limit)
    events = [
        sub(0, "whole"),
        start(0, "whole", ("gpu-1", [0])),
        sub(0, "b1"),
        start(0, "b1", ("gpu-1", [1])),
        sub(0, "gang"),  # a would hold 3 A100s, the cohort 4 of its 3
        _reserved(0, "gang", 20.0, ("gpu-0", [0]), ("gpu-0", [1])),
        sub(10, "quick"),
        node(11, "node_up", "cloud-h100-0"),  # ends the instant of t=10
    ]
    found = check_events(CLUSTER, WORKLOADS + [quick], events, work_conserving=True, truncated=True)
    assert (found is not None) == violated, str(found)
    if found is not None:
        assert (found.invariant, found.job) == (7, "quick")
    # Once it lapses, the reservation holds nothing.
    late = events[:-2] + [sub(25, "quick"), node(26, "node_up", "cloud-h100-0")]
    found = check_events(CLUSTER, WORKLOADS + [quick], late, work_conserving=True, truncated=True)
    assert found is not None and (found.t, found.job) == (25, "quick"), str(found)


def test_a_reservation_must_name_a_waiting_job() -> None:
    found = check(
        [sub(0, "whole"), start(0, "whole", ("gpu-0", [0])), _reserved(0, "whole", 5, ("gpu-1", [0]))]
    )
    assert found is not None and (found.invariant, found.line) == (0, 3), str(found)
