"""Artifacts leave private clusters only as models or checkpoints of jobs that are not sensitive: the
rule as a table, and the object store a cluster names."""

from __future__ import annotations

from itertools import product

import pytest

from corral.core.cluster import ClusterSpec, ObjectStoreSpec
from corral.federation.artifacts import (
    ARTIFACT_KINDS,
    PUBLIC_KINDS,
    ArtifactCopy,
    ArtifactKind,
    ArtifactRefused,
    check_copy,
)


def _copy(kind: ArtifactKind = "model", sensitive: bool = False, private: bool = False) -> ArtifactCopy:
    return ArtifactCopy(
        job="j1", sensitive=sensitive, artifact="out/thing", kind=kind, cluster="cloud", private=private
    )


@pytest.mark.parametrize(
    ("kind", "sensitive", "private"), list(product(ARTIFACT_KINDS, [False, True], [False, True]))
)
def test_the_rule_admits_anything_to_private_clusters_and_only_models_and_checkpoints_of_open_jobs_to_public(
    kind: ArtifactKind, sensitive: bool, private: bool
) -> None:
    allowed = private or (not sensitive and kind in {"model", "checkpoint"})
    copy = _copy(kind, sensitive, private)
    if allowed:
        check_copy(copy)
    else:
        with pytest.raises(ArtifactRefused):
            check_copy(copy)


def test_refusals_name_the_job_the_artifact_the_cluster_and_what_may_go() -> None:
    assert PUBLIC_KINDS == {"model", "checkpoint"}
    with pytest.raises(ArtifactRefused) as sensitive:
        check_copy(_copy("model", sensitive=True))
    assert str(sensitive.value) == (
        "job j1 is sensitive: its artifacts never leave private clusters "
        "('out/thing' to public cluster 'cloud' refused)"
    )
    with pytest.raises(ArtifactRefused) as dataset:
        check_copy(_copy("dataset"))
    assert str(dataset.value) == (
        "only models and checkpoints may be copied to public cluster 'cloud'; "
        "'out/thing' of job j1 is marked dataset"
    )


def test_a_cluster_names_its_object_store_and_the_variables_holding_its_credentials() -> None:
    cluster = ClusterSpec.model_validate(
        {
            "name": "cloud",
            "private": False,
            "object_store": {"endpoint": "http://127.0.0.1:9000", "bucket": "corral", "acl": "private"},
        }
    )
    assert cluster.object_store == ObjectStoreSpec(endpoint="http://127.0.0.1:9000", bucket="corral")
    assert cluster.object_store.access_key_variable == "AWS_ACCESS_KEY_ID"
    assert cluster.object_store.secret_key_variable == "AWS_SECRET_ACCESS_KEY"
    assert ClusterSpec(name="lab").object_store is None
