"""FGD's fragmentation measure on hand-computed cases."""

from __future__ import annotations

import pytest
from builders import job, make_node, use_gpu

from corral.core.workloads import PodRequest
from corral.scheduling.fragmentation import (
    TypicalShape,
    fragmentation_rate,
    node_fragmentation,
    shape_fragment,
    typical_shapes,
)


def _node():  # type: ignore[no-untyped-def]
    """8 GPUs: 0-3 full, 4 half used, 5 at 700, 6-7 idle; 10 of 64 cores used. Free: 0,0,0,0,500,300,1000,1000."""
    node = make_node(gpus=8, cpu=64, model="A100")
    for index in range(4):
        use_gpu(node, index)
    use_gpu(node, 4, 500)
    use_gpu(node, 5, 700)
    node.hold(10.0, 0.0, (), 0, 0.0)
    return node


def _shape(
    cpu: float = 4, gpus: int = 1, milli: int = 1000, models=None, weight: float = 1.0
) -> TypicalShape:  # type: ignore[no-untyped-def]
    return TypicalShape(cpu=cpu, gpus=gpus, gpu_milli=milli, models=models, weight=weight)


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        (_shape(milli=500), 300),  # fits; only GPU 5 (300 free) is too small for a half share
        (_shape(gpus=2), 800),  # two idle GPUs fit it; the partly used 500 + 300 cannot serve whole GPUs
        (_shape(gpus=4), 2800),  # needs 4 idle GPUs, has 2: everything idle is lost to it
        (_shape(gpus=0, milli=0), 2800),  # CPU-only jobs use no GPU
        (_shape(cpu=60, milli=500), 2800),  # 54 cores free: it cannot run here at all
        (_shape(models=frozenset({"H100"})), 2800),  # wrong model
        (_shape(models=frozenset({"H100", "A100"}), milli=300), 0),  # every GPU with room has >= 300
    ],
)
def test_shape_fragment(shape: TypicalShape, fragment: int) -> None:
    assert shape_fragment(_node(), shape) == fragment


def test_node_fragmentation_weights_shapes_by_popularity() -> None:
    shapes = [
        _shape(milli=500, weight=0.5),
        _shape(gpus=2, weight=0.3),
        _shape(gpus=4, weight=0.1),
        _shape(gpus=0, milli=0, weight=0.1),
    ]
    assert node_fragmentation(_node(), shapes) == pytest.approx(
        0.5 * 300 + 0.3 * 800 + 0.1 * 2800 + 0.1 * 2800
    )


def test_full_node_has_no_fragmentation() -> None:
    node = make_node(gpus=2)
    use_gpu(node, 0)
    use_gpu(node, 1)
    assert node_fragmentation(node, [_shape(gpus=0, milli=0)]) == 0


def test_fragmentation_rate_is_share_of_idle_gpu() -> None:
    idle_node = make_node(gpus=2)
    rate = fragmentation_rate([_node(), idle_node], (_shape(gpus=4),))
    assert rate == pytest.approx((2800 + 2000) / (2800 + 2000))
    assert fragmentation_rate([_node(), idle_node], (_shape(gpus=2),)) == pytest.approx(800 / 4800)


def _pods(*pairs: tuple[int, PodRequest]) -> list[PodRequest]:
    return [pod for count, pod in pairs for _ in range(count)]


def test_typical_shapes_cover_the_most_frequent_and_renormalise() -> None:
    a, b, c = job("a", milli=500, cpu=4).pod, job("b", gpus=8, cpu=32).pod, job("c", gpus=0, cpu=2).pod
    pods = _pods((6, a), (3, b), (1, c))
    shapes = typical_shapes(pods, coverage=0.9)
    assert [(s.gpus, s.gpu_milli, s.weight) for s in shapes] == [(1, 500, 6 / 9), (8, 1000, 3 / 9)]
    shapes = typical_shapes(pods, coverage=0.95)
    assert [s.weight for s in shapes] == pytest.approx([0.6, 0.3, 0.1])
    assert typical_shapes([]) == ()


def test_the_remembered_model_computes_exactly_the_measure() -> None:
    """FragmentationModel works out each share threshold once per state; it must give the same float as
    summing the definition (``shape_fragment``) shape by shape, or FGD's integer ties would shift."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from corral.scheduling.fragmentation import FragmentationModel, _fragment, _Room

    shapes = (
        TypicalShape(cpu=4, gpus=1, gpu_milli=500, models=None, weight=0.3, memory_gib=8),
        TypicalShape(cpu=2, gpus=0, gpu_milli=0, models=None, weight=0.2),
        TypicalShape(cpu=8, gpus=2, gpu_milli=1000, models=frozenset({"A"}), weight=0.25),
        TypicalShape(cpu=1, gpus=1, gpu_milli=300, models=frozenset({"B"}), weight=0.25, memory_gib=100),
    )
    model = FragmentationModel(shapes)

    @settings(max_examples=300, deadline=None)
    @given(
        free=st.lists(st.sampled_from([0, 100, 300, 500, 700, 1000]), max_size=8),
        model_name=st.sampled_from(["A", "B", None]),
        cpu=st.sampled_from([0, 1, 3, 8, 20]),
        memory=st.sampled_from([0, 8, 50, 200]),
    )
    def agree(free: list[int], model_name: str | None, cpu: int, memory: int) -> None:
        room = _Room(model_name, cpu, memory)
        assert model.of(room, free) == sum(s.weight * _fragment(room, free, s) for s in shapes)

    agree()
