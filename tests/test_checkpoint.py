"""checkpointed_progress: the work a stopped job keeps is its last checkpoint, never more than the job."""

from __future__ import annotations

import pytest
from builders import job

from corral.core.workloads import Workload, checkpointed_progress


@pytest.mark.parametrize(
    ("checkpoint", "duration", "progress", "kept"),
    [
        pytest.param(None, 100.0, 75.0, 0.0, id="no-checkpoints-keeps-nothing"),
        pytest.param(30.0, 100.0, 0.0, 0.0, id="not-started"),
        pytest.param(30.0, 100.0, 29.9, 0.0, id="before-first-checkpoint"),
        pytest.param(30.0, 100.0, 30.0, 30.0, id="exactly-at-a-checkpoint"),
        pytest.param(30.0, 100.0, 75.0, 60.0, id="between-checkpoints"),
        pytest.param(30.0, 100.0, 250.0, 100.0, id="never-more-than-the-duration"),
        pytest.param(0.5, 100.0, 1.75, 1.5, id="sub-second-checkpoints"),
    ],
)
def test_checkpointed_progress_is_the_last_checkpoint(checkpoint, duration, progress, kept) -> None:
    workload = job("j", duration=duration, checkpoint_seconds=checkpoint)
    assert checkpointed_progress(workload, progress) == pytest.approx(kept)


@pytest.mark.parametrize(("progress", "step", "kept"), [(1.0, 0.1, 1.0), (0.3, 0.1, 0.3), (0.7, 0.1, 0.7)])
def test_progress_on_a_checkpoint_boundary_is_kept_despite_float_rounding(progress, step, kept) -> None:
    """1.0 // 0.1 is 9.0 in floats; a job that ran exactly ten 0.1 s intervals keeps all ten."""
    workload = Workload(id="j", duration=10.0, checkpoint_seconds=step)
    assert checkpointed_progress(workload, progress) == pytest.approx(kept)
