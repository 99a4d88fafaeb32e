"""The imported Alibaba trace replays end to end and its event log satisfies every invariant."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.scenario.invariants import check_files
from corral.scenario.io import EventWriter, load_cluster_file, load_workload
from corral.scheduling import get_policy
from corral.sim.engine import Simulator
from corral.traces.alibaba import import_openb

TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "alibaba-gpu-v2023"

pytestmark = [
    pytest.mark.trace,
    pytest.mark.skipif(not TRACE.is_dir(), reason=f"Alibaba trace not found at {TRACE}"),
]


def test_openb_trace_replays_clean(tmp_path: Path) -> None:
    imported = import_openb(TRACE, tmp_path)
    cluster = load_cluster_file(imported.cluster_path)
    workload = load_workload(imported.workload_path)
    events = tmp_path / "events.jsonl"
    with open(events, "w", encoding="utf-8") as handle:
        result = Simulator(cluster, workload, get_policy(None), sink=EventWriter(handle).write).run()
    summary = result.summary
    assert summary.jobs == imported.jobs
    assert summary.finished + summary.rejected + summary.waiting == summary.jobs
    assert summary.finished == summary.jobs
    assert check_files(imported.cluster_path, imported.workload_path, events) is None
