"""Placement: filters say which nodes can hold a pod and why not, GPU choice inside a node, scoring, gangs."""

from __future__ import annotations

from collections import Counter

import pytest
from builders import NVLINK_2X4, fail_gpu, job, make_node, make_nodes, use_gpu

from corral.core.nodes import Node
from corral.scheduling.gpu_choice import choose_gpus
from corral.scheduling.placement import FitFailure, place_gang, pods_fitting
from corral.scheduling.policies import POLICIES
from corral.scheduling.scorers import BinPack, Scoring, Spread

DEFAULT = POLICIES["default"].scoring
SPREAD = POLICIES["spread"].scoring


def usage(nodes: list[Node]) -> list[tuple[object, ...]]:
    return [
        (
            n.used_cpu,
            n.used_memory_gib,
            n.whole_free_gpus,
            n.used_gpu_milli,
            tuple((g.used_milli, g.used_memory_gib) for g in n.gpus),
        )
        for n in nodes
    ]


# -- filters: each rejects the node with its own label ------------------------------------------------


def _down(node: Node) -> None:
    node.up = False


def _all_gpus_unhealthy(node: Node) -> None:
    for i in range(len(node.gpus)):
        fail_gpu(node, i)


@pytest.mark.parametrize(
    ("spoil", "request_", "label"),
    [
        pytest.param(_down, {}, "down", id="node-down"),
        pytest.param(None, {"model": "H100"}, "wrong GPU model", id="wrong-model"),
        pytest.param(None, {"model": "H100|V100"}, "wrong GPU model", id="wrong-model-alternatives"),
        pytest.param(None, {"gpus": 9}, "insufficient GPUs", id="too-many-gpus"),
        pytest.param(None, {"cpu": 65}, "insufficient CPU", id="too-much-cpu"),
        pytest.param(None, {"mem": 513}, "insufficient memory", id="too-much-memory"),
        pytest.param(_all_gpus_unhealthy, {}, "insufficient GPUs", id="unhealthy-gpus-whole"),
        pytest.param(_all_gpus_unhealthy, {"milli": 100}, "insufficient GPUs", id="unhealthy-gpus-share"),
        pytest.param(None, {"milli": 500, "gpu_mem": 81}, "insufficient GPUs", id="share-gpu-memory"),
        pytest.param(
            None,
            {"gpus": 1, "gpu_mem": 81},
            "insufficient GPUs",
            id="whole-gpu-memory",
        ),
    ],
)
def test_each_filter_rejects_a_node_with_its_own_reason(spoil, request_, label) -> None:
    """A node that cannot hold the pod is turned away, and the pending job is told which filter said no."""
    node = make_node()  # 8 x A100 80 GiB, 64 CPU, 512 GiB
    if spoil:
        spoil(node)
    pod = job("j", **request_).pod
    outcome = place_gang([node], pod, 1, DEFAULT)
    assert outcome == FitFailure(pod=0, nodes=1, rejected_by=Counter({label: 1}))


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param({"model": "A100"}, id="same-model"),
        pytest.param({"model": "H100|A100"}, id="one-of-alternatives"),
        pytest.param({"model": " H100 | A100 "}, id="alternatives-with-spaces"),
        pytest.param({"gpus": 8, "cpu": 64, "mem": 512}, id="exactly-the-whole-node"),
        pytest.param({"milli": 500, "gpu_mem": 80}, id="share-with-all-gpu-memory"),
    ],
)
def test_a_node_that_has_room_passes_every_filter(request_) -> None:
    """Boundary cases fit: the right model (or one of 'A|B'), exactly the node's capacity."""
    node = make_node()
    outcome = place_gang([node], job("j", **request_).pod, 1, DEFAULT)
    assert isinstance(outcome, list) and [p.node for p in outcome] == ["n-0"]


def test_filters_stop_at_the_first_failing_one() -> None:
    """A node that is down and of the wrong model counts once, under the cheaper filter (down)."""
    node = make_node()
    node.up = False
    outcome = place_gang([node], job("j", model="H100", cpu=999).pod, 1, DEFAULT)
    assert isinstance(outcome, FitFailure)
    assert outcome.rejected_by == Counter({"down": 1})


def test_an_unhealthy_gpu_is_never_chosen() -> None:
    """A whole-GPU pod and a share both avoid a GPU marked unhealthy, even when it is idle."""
    node = fail_gpu(make_node(gpus=2), 0)
    assert choose_gpus(node, job("j").pod) == (1,)
    assert choose_gpus(node, job("j", milli=300).pod) == (1,)
    fail_gpu(node, 1)
    assert choose_gpus(node, job("j").pod) is None
    assert choose_gpus(node, job("j", milli=300).pod) is None


# -- choose_gpus: NVLink groups for whole GPUs, packing for shares -------------------------------------


def test_four_gpu_pod_gets_one_whole_nvlink_group() -> None:
    """On an empty 2x4 NVLink node, 4 GPUs come from a single group, never 2 + 2."""
    node = make_node(nvlink=NVLINK_2X4)
    assert choose_gpus(node, job("j", gpus=4).pod) == (0, 1, 2, 3)


def test_small_pod_takes_the_smallest_nvlink_group_that_fits() -> None:
    """Group 0 has 3 free and group 1 has 4: a 2-GPU pod uses group 0, keeping group 1 whole."""
    node = use_gpu(make_node(nvlink=NVLINK_2X4), 0)
    assert choose_gpus(node, job("j", gpus=2).pod) == (1, 2)


def test_pod_larger_than_any_group_spans_fewest_groups_fullest_first() -> None:
    """3 free in group 0, 4 in group 1: a 5-GPU pod takes all of group 1 and one GPU of group 0."""
    node = use_gpu(make_node(nvlink=NVLINK_2X4), 0)
    assert choose_gpus(node, job("j", gpus=5).pod) == (1, 4, 5, 6, 7)


def test_partly_used_gpus_are_not_whole_gpus() -> None:
    """A GPU holding a share (or only GPU memory) is not free for a whole-GPU pod."""
    node = use_gpu(use_gpu(make_node(gpus=3), 0, milli=100), 1, milli=0, mem=1.0)
    assert choose_gpus(node, job("j").pod) == (2,)
    assert choose_gpus(node, job("j", gpus=2).pod) is None


@pytest.mark.parametrize(("pack", "expected"), [(True, (0,)), (False, (1,))])
def test_share_goes_to_fullest_gpu_that_fits_when_packing_else_emptiest(pack, expected) -> None:
    """GPUs hold 500, 250, 750 milli; a 500 share fits only GPUs 0 and 1: pack picks 0, spread picks 1."""
    node = make_node(gpus=3)
    for index, milli in enumerate((500, 250, 750)):
        use_gpu(node, index, milli=milli)
    assert choose_gpus(node, job("j", milli=500).pod, pack=pack) == expected


def test_share_respects_gpu_memory() -> None:
    """GPU 0 has the most milli used but only 10 GiB left; a share needing 20 GiB goes to GPU 1."""
    node = make_node(gpus=2, gpu_mem=40)
    use_gpu(node, 0, milli=500, mem=30)
    use_gpu(node, 1, milli=250, mem=0)
    pod = job("j", milli=250, gpu_mem=20).pod
    assert choose_gpus(node, pod, pack=True) == (1,)
    use_gpu(node, 1, milli=0, mem=25)  # now 15 GiB left on GPU 1 too
    assert choose_gpus(node, pod, pack=True) is None


def test_shares_fill_a_gpu_exactly_to_1000_milli() -> None:
    """Four 250-milli shares placed one after another all land on GPU 0 (packing), the fifth on GPU 1."""
    nodes = make_nodes(1, gpus=2)
    outcome = place_gang(nodes, job("j", pods=5, milli=250).pod, 5, DEFAULT)
    assert isinstance(outcome, list)
    assert [p.gpus for p in outcome] == [(0,), (0,), (0,), (0,), (1,)]


# -- scoring: BinPack vs Spread ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scoring", "expected"),
    [
        pytest.param(Scoring(((BinPack(), 1.0),)), "n-1", id="binpack"),
        pytest.param(Scoring(((Spread(), 1.0),)), "n-0", id="spread"),
        pytest.param(DEFAULT, "n-1", id="default-policy"),
        pytest.param(SPREAD, "n-0", id="spread-policy"),
    ],
)
def test_binpack_picks_the_fuller_node_and_spread_the_emptier(scoring, expected) -> None:
    """n-0 is empty, n-1 has 4 of 8 GPUs busy: bin-packing fills n-1, spreading uses n-0."""
    nodes = make_nodes(2)
    for i in range(4):
        use_gpu(nodes[1], i)
    outcome = place_gang(nodes, job("j").pod, 1, scoring)
    assert isinstance(outcome, list) and [p.node for p in outcome] == [expected]


def test_cpu_only_pod_goes_to_a_cpu_node_rather_than_an_idle_gpu_node() -> None:
    """GPU sparing: a CPU-only pod avoids stranding the idle GPUs of a GPU node when a CPU node has room."""
    gpu_node = make_node()
    [cpu_node] = make_nodes(1, pool="cpu", gpus=0)
    outcome = place_gang([gpu_node, cpu_node], job("j", gpus=0, cpu=4).pod, 1, DEFAULT)
    assert isinstance(outcome, list) and outcome[0].node == "cpu-0" and outcome[0].gpus == ()


def test_without_scorers_the_first_node_that_fits_wins() -> None:
    """The fifo policy (no scorers) takes nodes in order: n-0 is full, so n-1."""
    nodes = make_nodes(3)
    for i in range(8):
        use_gpu(nodes[0], i)
    outcome = place_gang(nodes, job("j").pod, 1, Scoring())
    assert isinstance(outcome, list) and outcome[0].node == "n-1"


# -- gangs ---------------------------------------------------------------------------------------------


def test_gang_that_cannot_fit_places_nothing_and_says_why() -> None:
    """3 pods x 4 GPUs: n-0 takes two, n-1 has 3 free, n-2 is down; pod 2 fails and no node keeps anything."""
    nodes = make_nodes(3)
    for i in range(5):
        use_gpu(nodes[1], i)
    nodes[2].up = False
    before = usage(nodes)

    outcome = place_gang(nodes, job("g", gpus=4, pods=3).pod, 3, DEFAULT)

    assert outcome == FitFailure(pod=2, nodes=3, rejected_by=Counter({"insufficient GPUs": 2, "down": 1}))
    assert outcome.describe() == "only 2 pods fit at once; pod 2: 0/3 nodes fit (2 insufficient GPUs, 1 down)"
    assert usage(nodes) == before


def test_first_pod_failure_is_described_without_pod_prefix() -> None:
    """When no node fits even one pod the message is kube-style, commonest reason first."""
    nodes = make_nodes(3)
    nodes[0].up = False
    outcome = place_gang(nodes, job("j", gpus=1, cpu=100).pod, 1, DEFAULT)
    assert isinstance(outcome, FitFailure)
    assert outcome.describe() == "0/3 nodes fit (2 insufficient CPU, 1 down)"


def test_successful_gang_leaves_nodes_unchanged_for_the_caller_to_commit() -> None:
    """place_gang returns placements but releases what it held: committing is the snapshot's job."""
    nodes = make_nodes(2)
    before = usage(nodes)
    outcome = place_gang(nodes, job("g", gpus=4, pods=3).pod, 3, DEFAULT)
    assert isinstance(outcome, list) and len(outcome) == 3
    assert usage(nodes) == before
    # and the placements never give one GPU to two pods
    taken = [(p.node, g) for p in outcome for g in p.gpus]
    assert len(taken) == len(set(taken)) == 12


def test_gang_goes_to_one_empty_node_rather_than_spreading() -> None:
    """4 pods x 2 GPUs on two empty 8-GPU nodes: all four on one node, each pod inside one NVLink group."""
    nodes = make_nodes(2, nvlink=NVLINK_2X4)
    outcome = place_gang(nodes, job("g", gpus=2, pods=4).pod, 4, DEFAULT)
    assert isinstance(outcome, list)
    assert {p.node for p in outcome} == {"n-0"}
    assert sorted(p.gpus for p in outcome) == [(0, 1), (2, 3), (4, 5), (6, 7)]


@pytest.mark.parametrize(
    "partial_first",
    [
        pytest.param(False, id="empty-node-listed-first"),
        pytest.param(
            True,
            id="partly-used-node-listed-first",
        ),
    ],
)
def test_gang_prefers_the_node_that_holds_it_whole(partial_first) -> None:
    """4 pods x 2 GPUs; one node has 4 of 8 GPUs busy, the other is empty: the gang goes to the empty one."""
    nodes = make_nodes(2)
    partial, empty = (nodes[0], nodes[1]) if partial_first else (nodes[1], nodes[0])
    for i in range(4):
        use_gpu(partial, i)
    outcome = place_gang(nodes, job("g", gpus=2, pods=4).pod, 4, DEFAULT)
    assert isinstance(outcome, list)
    assert [p.node for p in outcome] == [empty.name] * 4


@pytest.mark.parametrize(
    ("busy", "request_", "expected"),
    [
        pytest.param(0, {"gpus": 2}, 4, id="whole-gpus"),
        pytest.param(3, {"gpus": 2}, 2, id="whole-gpus-some-busy"),
        pytest.param(0, {"gpus": 1, "cpu": 20}, 3, id="cpu-bound"),
        pytest.param(0, {"milli": 300}, 24, id="shares"),
        pytest.param(0, {"gpus": 0, "cpu": 0}, 1_000_000, id="asks-nothing"),
    ],
)
def test_pods_fitting_counts_how_many_more_pods_a_node_takes(busy, request_, expected) -> None:
    """The gang-locality score's input: pods of this shape the node can still take."""
    node = make_node()
    for i in range(busy):
        use_gpu(node, i)
    assert pods_fitting(node, job("j", **request_).pod) == expected
