"""Artifacts leave private clusters only as models or checkpoints of jobs that are not sensitive: the
rule as a table, copies to a real S3-compatible server (moto on loopback), refusals that move nothing and
are audited."""

from __future__ import annotations

import contextlib
import logging
from itertools import product
from pathlib import Path

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
from corral.federation.job_files import ArtifactNotFound, job_folders, locate
from corral.federation.transfer import ObjectStoreError, push
from corral.spec.job import JobSpec


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


def test_an_artifact_is_a_file_or_directory_inside_the_job_s_folders(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    pod = runs / "j1" / "attempt-1" / "pod-0"
    pod.mkdir(parents=True)
    (pod / "model.pt").write_bytes(b"weights")
    checkpoints = tmp_path / "ckpt"
    (checkpoints / "step-10").mkdir(parents=True)
    (checkpoints / "step-10" / "state").write_bytes(b"state")
    (tmp_path / "secret").write_text("not the job's")
    (pod / "escape").symlink_to(tmp_path / "secret")
    (pod / "empty").mkdir()
    spec = JobSpec.model_validate(
        {"name": "train", "command": "true", "checkpoint": {"dir": str(checkpoints), "interval": "10m"}}
    )
    folders = job_folders("j1", spec, runs)
    assert locate("attempt-1/pod-0/model.pt", "j1", folders) == (
        (pod / "model.pt").resolve(),
        "attempt-1/pod-0/model.pt",
    )
    assert locate(str(checkpoints / "step-10"), "j1", folders)[1] == "step-10"
    assert locate("step-10", "j1", folders)[1] == "step-10"
    for outside in ["../../secret", str(tmp_path / "secret"), "attempt-1/pod-0/escape", "nothing"]:
        with pytest.raises(ArtifactNotFound, match="is not a file or directory inside job j1's folders"):
            locate(outside, "j1", folders)
    with pytest.raises(ArtifactNotFound, match="empty directory"):
        locate("attempt-1/pod-0/empty", "j1", folders)


def _objects(store: ObjectStoreSpec) -> dict[str, bytes]:
    """Every object in the store's bucket, read back over the S3 API."""
    with contextlib.closing(_s3(store)) as client:
        listed = client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
        return {o["Key"]: client.get_object(Bucket=store.bucket, Key=o["Key"])["Body"].read() for o in listed}


def _s3(store: ObjectStoreSpec):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name=store.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_a_file_and_a_directory_are_copied_under_tenant_job_and_name(
    tmp_path: Path, bucket: ObjectStoreSpec
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"\x00weights\xff")
    pushed = push(_copy("model"), model, "vision", bucket, actor="test")
    assert pushed.url == f"s3://{bucket.bucket}/vision/j1/out/thing"
    assert pushed.size == len(b"\x00weights\xff")
    (tmp_path / "ckpt" / "shard").mkdir(parents=True)
    (tmp_path / "ckpt" / "meta.json").write_text("{}")
    (tmp_path / "ckpt" / "shard" / "0.bin").write_bytes(b"zero")
    folder = ArtifactCopy("j2", False, "ckpt", "checkpoint", "cloud", private=False)
    assert push(folder, tmp_path / "ckpt", "vision", bucket, actor="test").keys == (
        "vision/j2/ckpt/meta.json",
        "vision/j2/ckpt/shard/0.bin",
    )
    assert _objects(bucket) == {
        "vision/j1/out/thing": b"\x00weights\xff",
        "vision/j2/ckpt/meta.json": b"{}",
        "vision/j2/ckpt/shard/0.bin": b"zero",
    }


def test_a_refused_copy_moves_nothing_and_is_audited(
    tmp_path: Path, bucket: ObjectStoreSpec, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "train.csv"
    data.write_text("a,b\n")
    with caplog.at_level(logging.WARNING, logger="corral.audit"), pytest.raises(ArtifactRefused):
        push(_copy("dataset"), data, "vision", bucket, actor="alice (member, tenant vision)")
    assert _objects(bucket) == {}
    [record] = [r for r in caplog.records if r.name == "corral.audit"]
    assert record.getMessage() == (
        "refused artifact copy for alice (member, tenant vision): job j1, artifact 'out/thing' "
        "(kind dataset), cluster cloud: only models and checkpoints may be copied to public cluster "
        "'cloud'; 'out/thing' of job j1 is marked dataset"
    )


def test_missing_credentials_or_bucket_are_named(
    tmp_path: Path, bucket: ObjectStoreSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"w")
    missing = bucket.model_copy(update={"bucket": "no-such-bucket"})
    with pytest.raises(ObjectStoreError, match="cluster 'cloud'.s object store failed"):
        push(_copy(), model, "vision", missing, actor="test")
    monkeypatch.delenv(bucket.secret_key_variable)
    with pytest.raises(ObjectStoreError, match="set CORRAL_TEST_S3_KEY and CORRAL_TEST_S3_SECRET"):
        push(_copy(), model, "vision", bucket, actor="test")
