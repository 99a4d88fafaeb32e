"""The drain timeline (``corral.bench.drain``) accounts for every allocated GPU-second of a replay, per
flavor and per queue, and never reports more GPUs busy or idle than the cluster has."""

from __future__ import annotations

import pytest

from corral.bench.contended import capacity_gpus, generate
from corral.bench.drain import HOUR, markdown, replay_timeline


@pytest.mark.parametrize("policy", ["default", "fifo"])
def test_the_timeline_adds_up_to_the_replays_allocated_gpu_time(policy: str) -> None:
    scenario = generate("gangs", 7, 60)
    timeline, result = replay_timeline(scenario.cluster_file, scenario.workloads, policy, bucket=HOUR)
    stretches = timeline.stretches()
    flavors = {"ws", "dgx"}
    by_flavor = sum(v for _, busy in stretches for k, v in busy.items() if k in flavors) * HOUR
    by_queue = sum(v for _, busy in stretches for k, v in busy.items() if "/" in k) * HOUR
    assert by_flavor == pytest.approx(result.summary.gpu_hours_used * HOUR, rel=1e-6)
    assert by_queue == pytest.approx(by_flavor, rel=1e-9)
    capacity = capacity_gpus(scenario.cluster_file)
    assert all(sum(busy.get(f, 0.0) for f in flavors) <= capacity + 1e-9 for _, busy in stretches)
    largest_nodes_gpus = 8 * 8  # the lab's DGX nodes
    assert 0 <= timeline.idle_whole + timeline.idle_fragments <= largest_nodes_gpus * timeline.arrival_span


def test_the_table_has_a_row_per_stretch_and_one_per_policy() -> None:
    scenario = generate("mixed", 7, 40)
    timelines = {
        policy: replay_timeline(scenario.cluster_file, scenario.workloads, policy, bucket=10 * HOUR)[0]
        for policy in ("default", "fifo")
    }
    rows = markdown(timelines, "nlp")
    longest = max(len(t.stretches()) for t in timelines.values())
    assert rows[0].startswith("| from h | default dgx | default ws | default nlp (all flavors) | fifo dgx")
    assert len(rows) == 2 + longest + 1 + 2 + len(timelines)
