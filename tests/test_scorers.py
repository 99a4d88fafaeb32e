"""Score plugins of the FGD paper's policies and corral-fgd, on small hand-made nodes with known answers.

Scores follow the paper's artifact: integers 0..100 against max node specs of 128 cores and 8 GPUs.
"""

from __future__ import annotations

import random

from builders import job, make_nodes, use_gpu

from corral.core.nodes import Node
from corral.scheduling.fragmentation import (
    FragmentationGradient,
    FragmentationModel,
    LeastFragmentingGpu,
    TypicalShape,
    gradient_score,
    node_fragmentation,
    typical_shapes,
)
from corral.scheduling.placement import place_gang
from corral.scheduling.policies import get_policy
from corral.scheduling.scorers import BestFit, DotProduct, GpuClustering, GpuPacking

HALF = job("half", milli=500, cpu=4).pod
WHOLE = job("whole", cpu=8).pod
CPU_ONLY = job("cpu", gpus=0, cpu=16).pod


def _node(gpus: int = 4, cpu: float = 32) -> Node:
    return make_nodes(1, gpus=gpus, cpu=cpu)[0]


def test_best_fit_scores_what_is_left_against_max_specs() -> None:
    """32 cores, 4 idle GPUs; the pod takes 4 cores and half a GPU: left (28000/128000 + 3500/8000)/2."""
    assert BestFit()(_node(), HALF, (0,)) == int((1 - (28000 / 128000 * 0.5 + 3500 / 8000 * 0.5)) * 100) == 67


def test_best_fit_prefers_the_fuller_node() -> None:
    empty, used = _node(), _node()
    use_gpu(used, 0)
    use_gpu(used, 1)
    assert BestFit()(used, WHOLE, (2,)) > BestFit()(empty, WHOLE, (0,))


def test_dot_product_prefers_the_node_whose_free_vector_is_least_aligned() -> None:
    """free (32000/128000, 4000/8000) . asked (4000/128000, 500/8000) = 0.0390625 -> 100 (1 - 0.0195)."""
    assert DotProduct()(_node(), HALF, (0,)) == 98
    busy = _node()
    for index in range(3):
        use_gpu(busy, index)
    assert DotProduct()(busy, HALF, (3,)) == 99


def test_gpu_packing_bands() -> None:
    """Idle node: 33 - idle GPUs (4 GPUs: 29). Fresh GPUs of a used node: 50 - fresh used (49). Shared
    GPUs: 100 - (free share x 100 / 1000) / 10 (a GPU with 600 free: 94)."""
    idle = _node()
    assert GpuPacking()(idle, HALF, (0,)) == 29
    used = _node()
    use_gpu(used, 0)
    assert GpuPacking()(used, WHOLE, (1,)) == 49
    shared = _node()
    use_gpu(shared, 0, 400)
    assert GpuPacking()(shared, HALF, (0,)) == 94
    assert GpuPacking()(shared, CPU_ONLY, ()) == 0


def test_gpu_clustering_keeps_one_gpu_size_together() -> None:
    """Base 25 x (8000 - free milli-GPU) / 8000 (so a 4-GPU node starts at 12, the artifact's bias toward
    small nodes), plus 75 (only this size here), 50 (mixed sizes), 25 (no GPU pods) or 0 (others only)."""
    same, mixed, other, idle = _node(), _node(), _node(), _node()
    use_gpu(same, 0, 500)
    use_gpu(mixed, 0, 500)
    use_gpu(mixed, 1)
    use_gpu(other, 0)
    scorer = GpuClustering()
    assert scorer(same, HALF, (0,)) == 25 * 4500 // 8000 + 75 == 89
    assert scorer(mixed, HALF, (0,)) == 25 * 5500 // 8000 + 50 == 67
    assert scorer(other, HALF, (1,)) == 25 * 5000 // 8000 + 0 == 15
    assert scorer(idle, HALF, (0,)) == 12 + 25


def test_fgd_score_is_fifty_when_fragmentation_does_not_change() -> None:
    assert gradient_score(0) == 50
    assert gradient_score(-1000) == 73  # fragmentation shrinks by a GPU: better than 50
    assert gradient_score(1000) == 26


def test_fgd_prefers_the_node_where_a_half_gpu_pod_fills_a_half_used_gpu() -> None:
    """Typical pods are half-GPU pods. On node A a GPU is half used: the new pod fills it and nothing is
    fragmented. On the idle node B it would leave a half GPU that, after it, is still usable: both keep
    fragmentation at 0 for half pods, so add whole-GPU pods to the mix: on B the pod breaks a whole GPU."""
    shapes = (
        TypicalShape(cpu=1, gpus=1, gpu_milli=500, models=None, weight=0.5),
        TypicalShape(cpu=1, gpus=1, gpu_milli=1000, models=None, weight=0.5),
    )
    model = FragmentationModel(shapes)
    a, b = make_nodes(2, gpus=2, cpu=32)
    use_gpu(a, 0, 500)
    scorer, chooser = FragmentationGradient(model), LeastFragmentingGpu(model)
    gpus_a = chooser(a, HALF, random.Random(0))
    assert gpus_a == (0,)  # the half-used GPU, not the idle one
    assert scorer(a, HALF, gpus_a) > scorer(b, HALF, chooser(b, HALF, random.Random(0)))
    outcome = place_gang([b, a], HALF, 1, get_policy("fgd", [HALF, WHOLE]).scoring)
    assert isinstance(outcome, list) and (outcome[0].node, outcome[0].gpus) == ("n-0", (0,))


def test_corral_fgd_counts_gpus_stranded_by_memory() -> None:
    """Typical pods need one GPU and 64 GiB. A node with 2 idle GPUs but only 32 GiB left strands both for
    corral-fgd's shapes; plain FGD, blind to memory, sees no fragmentation. So a small pod that uses one
    of those GPUs shrinks fragmentation for corral-fgd (it uses a stranded GPU) and is neutral for FGD."""
    typical = [job(f"t{i}", cpu=1, mem=64).pod for i in range(3)]
    with_memory, without = typical_shapes(typical, memory=True), typical_shapes(typical)
    [node] = make_nodes(1, gpus=2, cpu=32, mem=128)
    node.hold(0.0, 96.0, (), 0, 0.0)
    assert node_fragmentation(node, with_memory) == 2000
    assert node_fragmentation(node, without) == 0
    small = job("s", cpu=1, mem=8).pod
    assert FragmentationModel(with_memory).growth(node, small, (0,)) == -1000
    assert FragmentationModel(without).growth(node, small, (0,)) == 0


def test_a_fragmentation_aware_policy_must_learn_its_shapes_before_scheduling() -> None:
    """Without the workload's typical shapes FGD would score every node 50 and silently degrade to first
    fit; the scheduler refuses instead."""
    import pytest

    from corral.scheduling import Snapshot, schedule

    with pytest.raises(ValueError, match="typical pod shapes"):
        schedule(Snapshot([], []), [], get_policy("fgd"), now=0.0)
    assert get_policy("fgd", [HALF]).shaped is None
