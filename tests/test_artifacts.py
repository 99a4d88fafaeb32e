"""Artifacts leave private clusters only as models or checkpoints of jobs that are not sensitive: the
rule as a table, copies to a real S3-compatible server (moto on loopback), refusals that move nothing and
are audited, and the route and the CLI end to end."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import pytest
import yaml
from builders import make_cluster, make_pool
from fastapi.testclient import TestClient
from servers import admin_client, free_port, start_server, stop, wait_for
from typer.testing import CliRunner

from corral.cli.main import app
from corral.control.reconcile import Inventory
from corral.core.cluster import ClusterSpec, ObjectStoreSpec
from corral.federation.artifacts import (
    ARTIFACT_KINDS,
    PUBLIC_KINDS,
    ArtifactCopy,
    ArtifactKind,
    ArtifactRefused,
    check_copy,
)
from corral.federation.job_files import ArtifactNotFound, ArtifactOfAnotherJob, job_folders, locate
from corral.federation.transfer import ObjectStoreError, push
from corral.paths import read_token
from corral.server.app import API, create_app
from corral.spec.job import JobSpec
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore


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
    checkpoints = runs / "j1" / "ckpt"
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


def test_folders_a_spec_names_make_no_file_the_job_s(tmp_path: Path) -> None:
    """Only the job's own folder counts, and its checkpoint dir when that lies inside it: a workdir, or a
    checkpoint dir elsewhere, is someone else's."""
    runs = tmp_path / "runs"
    elsewhere = tmp_path / "shared"
    elsewhere.mkdir()
    for checkpoint in ("/", str(elsewhere), str(runs / "j2")):
        spec = JobSpec.model_validate(
            {
                "name": "train",
                "command": "true",
                "workdir": str(elsewhere),
                "checkpoint": {"dir": checkpoint, "interval": "10m"},
            }
        )
        assert job_folders("j1", spec, runs) == [(runs / "j1").resolve()]
    inside = JobSpec.model_validate(
        {"name": "train", "command": "true", "checkpoint": {"dir": str(runs / "j1" / "ckpt"), "interval": 60}}
    )
    assert job_folders("j1", inside, runs) == [(runs / "j1").resolve(), (runs / "j1" / "ckpt").resolve()]
    other = runs / "j2" / "attempt-1" / "pod-0"
    other.mkdir(parents=True)
    (other / "model.pt").write_bytes(b"j2's")
    (runs / "j1").mkdir()
    (runs / "j1" / "borrowed").symlink_to(other / "model.pt")
    for path in (str(other / "model.pt"), "../j2/attempt-1/pod-0/model.pt", "borrowed", str(runs)):
        with pytest.raises(ArtifactOfAnotherJob, match="a job copies only what its own pods wrote"):
            locate(path, "j1", job_folders("j1", inside, runs), runs)


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


@dataclass
class Plane:
    http: TestClient
    runs: Path
    tokens: dict[str, str]
    jobs: dict[str, str]
    """name -> id: ``open`` (vision), ``sensitive`` (vision), ``other`` (nlp)."""
    public: ObjectStoreSpec
    private: ObjectStoreSpec
    store: JobStore

    def push(self, who: str, job: str, **body: str):  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return self.http.post(f"{API}/jobs/{self.jobs[job]}/artifacts", json=body, headers=headers)


@pytest.fixture
def plane(database_url: str, tmp_path: Path, bucket: ObjectStoreSpec) -> Iterator[Plane]:
    """A private cluster ``lab`` and a public ``cloud``, each with its own bucket; alice (member) and
    victor (viewer) of vision, bob (member) of nlp; every job has a model and a dataset in its folder."""
    private = bucket.model_copy(update={"bucket": f"{bucket.bucket}-lab"})
    with contextlib.closing(_s3(bucket)) as client:
        client.create_bucket(Bucket=private.bucket)
    inventory = Inventory(
        clusters=[
            make_cluster("lab", [make_pool("dgx", flavor="a100", gpus=8)], object_store=private),
            make_cluster("cloud", [make_pool("rent", flavor="h100", gpus=8)], False, bucket),
        ]
    )
    store = JobStore(open_store(database_url))
    runs = tmp_path / "runs"
    http = TestClient(create_app(store, inventory, runs=runs))
    accounts = AccountStore(store.engine)
    accounts.bootstrap()
    for tenant in ("vision", "nlp"):
        accounts.create_tenant(tenant)
    tokens = {
        user: accounts.create_user(user, tenant, role)[1]
        for user, tenant, role in [
            ("alice", "vision", "member"),
            ("victor", "vision", "viewer"),
            ("bob", "nlp", "member"),
        ]
    }
    jobs = {}
    for name, tenant, sensitive in [
        ("open", "vision", False),
        ("sensitive", "vision", True),
        ("other", "nlp", False),
    ]:
        spec = JobSpec.model_validate({"name": name, "command": "true", "sensitive": sensitive})
        jobs[name] = store.submit(spec, tenant=tenant).id
        pod = runs / jobs[name] / "attempt-1" / "pod-0"
        pod.mkdir(parents=True)
        (pod / "model.pt").write_bytes(f"weights of {name}".encode())
        (pod / "train.csv").write_text("a,b\n")
    yield Plane(http, runs, tokens, jobs, bucket, private, store)
    store.engine.dispose()


def test_a_member_copies_a_model_to_the_public_cluster(plane: Plane) -> None:
    answer = plane.push("alice", "open", path="attempt-1/pod-0/model.pt", kind="model", cluster="cloud")
    assert answer.status_code == 201, answer.text
    key = f"vision/{plane.jobs['open']}/attempt-1/pod-0/model.pt"
    assert answer.json() == {
        "job_id": plane.jobs["open"],
        "name": "attempt-1/pod-0/model.pt",
        "kind": "model",
        "cluster": "cloud",
        "url": f"s3://{plane.public.bucket}/{key}",
        "keys": [key],
        "size": len(b"weights of open"),
    }
    assert _objects(plane.public) == {key: b"weights of open"}


def test_anything_may_go_to_a_private_cluster(plane: Plane) -> None:
    for job in ("open", "sensitive"):
        answer = plane.push("alice", job, path="attempt-1/pod-0/train.csv", kind="dataset", cluster="lab")
        assert answer.status_code == 201, answer.text
    assert len(_objects(plane.private)) == 2


@pytest.mark.parametrize(
    ("job", "path", "kind", "message"),
    [
        ("open", "attempt-1/pod-0/train.csv", "dataset", "only models and checkpoints may be copied"),
        ("open", "attempt-1/pod-0/model.pt", "log", "is marked log"),
        ("sensitive", "attempt-1/pod-0/model.pt", "model", "is sensitive: its artifacts never leave"),
    ],
)
def test_the_route_refuses_what_may_not_go_public_and_audits_it(
    plane: Plane, job: str, path: str, kind: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="corral.audit"):
        answer = plane.push("alice", job, path=path, kind=kind, cluster="cloud")
    assert answer.status_code == 403 and message in answer.json()["detail"]
    assert _objects(plane.public) == {}
    assert f"refused artifact copy for alice (member, tenant vision): job {plane.jobs[job]}" in caplog.text
    assert f"(kind {kind}), cluster cloud" in caplog.text


@pytest.mark.parametrize("via", ["workdir", "checkpoint"])
def test_a_job_pointed_at_a_sensitive_job_s_folder_cannot_push_its_files_to_a_public_cluster(
    plane: Plane, via: str
) -> None:
    """The sensitive rule follows the file: a job that is not sensitive, whose workdir (or checkpoint.dir:
    /) is the sensitive job's folder, used to push that job's model to the public cluster as its own."""
    folder = plane.runs / plane.jobs["sensitive"] / "attempt-1" / "pod-0"
    pointed = {"workdir": str(folder)} if via == "workdir" else {"checkpoint": {"dir": "/", "interval": 60}}
    spec = JobSpec.model_validate({"name": "copycat", "command": "true"} | pointed)
    plane.jobs["copycat"] = plane.store.submit(spec, tenant="vision").id
    (plane.runs / plane.jobs["copycat"]).mkdir()
    relative = "model.pt" if via == "workdir" else str(folder / "model.pt").lstrip("/")
    for path, status in [(str(folder / "model.pt"), 403), (relative, 422)]:
        answer = plane.push("alice", "copycat", path=path, kind="model", cluster="cloud")
        assert answer.status_code == status, answer.text
    assert (
        f"is job {plane.jobs['sensitive']}'s files, not job {plane.jobs['copycat']}'s"
        in (
            plane.push(
                "alice", "copycat", path=str(folder / "model.pt"), kind="model", cluster="cloud"
            ).json()["detail"]
        )
    )
    assert _objects(plane.public) == {}


def test_links_a_job_planted_in_its_artifact_never_copy_the_server_s_files(
    plane: Plane, tmp_path: Path
) -> None:
    """A pod owns its folder and may leave links in what it calls its model; the server reads as root.
    A link to the server's token or to another job's model fails the whole copy (422) and copies nothing;
    a link inside the job's own folder (a model snapshot's blobs) is followed."""
    token = tmp_path / "token"
    token.write_text("corral_admin_secret")
    pod = plane.runs / plane.jobs["open"] / "attempt-1" / "pod-0"
    (pod / "model").mkdir()
    (pod / "model" / "weights.bin").symlink_to(pod / "model.pt")
    for name, target in [
        ("leak", token),
        ("theirs", plane.runs / plane.jobs["other"] / "attempt-1/pod-0/model.pt"),
    ]:
        (pod / "model" / name).symlink_to(target)
        answer = plane.push("alice", "open", path="attempt-1/pod-0/model", kind="model", cluster="lab")
        assert answer.status_code == 422, answer.text
        assert f"{name} leads to {target.resolve()}, outside the job's folders" in answer.json()["detail"]
        assert _objects(plane.private) == {}
        (pod / "model" / name).unlink()
    answer = plane.push("alice", "open", path="attempt-1/pod-0/model", kind="model", cluster="lab")
    assert answer.status_code == 201, answer.text
    assert list(_objects(plane.private).values()) == [b"weights of open"]


@pytest.mark.parametrize(
    ("who", "job", "body", "status", "detail"),
    [
        ("bob", "open", {"path": "attempt-1/pod-0/model.pt"}, 404, "no job"),
        ("victor", "open", {"path": "attempt-1/pod-0/model.pt"}, 403, "victor is viewer; this needs"),
        ("alice", "open", {"path": "attempt-1/pod-0/model.pt", "cluster": "moon"}, 422, "no cluster 'moon'"),
        ("alice", "open", {"path": "../../secret"}, 422, "is not a file or directory inside job"),
        ("alice", "open", {"path": "model.pt", "kind": "weights"}, 422, "kind: "),
    ],
)
def test_the_route_refuses_other_tenants_viewers_unknown_clusters_and_foreign_paths(
    plane: Plane, who: str, job: str, body: dict[str, str], status: int, detail: str
) -> None:
    answer = plane.push(who, job, **({"kind": "model", "cluster": "cloud"} | body))
    assert answer.status_code == status and detail in answer.json()["detail"], answer.text
    assert _objects(plane.public) == {}


def test_the_cli_pushes_a_trained_model_and_exits_1_on_a_refusal(
    tmp_path: Path, bucket: ObjectStoreSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real server runs a job that writes a model; `corral artifacts push` copies it to the public
    cluster's bucket, and is refused for the job's log."""
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "cloud",
                        "private": False,
                        "pools": [
                            {"name": "cpu", "flavor": "cpu", "count": 1, "node": {"cpu": 4, "memory_gib": 8}}
                        ],
                        "object_store": bucket.model_dump(),
                    }
                ]
            }
        )
    )
    port = free_port()
    server = start_server(tmp_path, port, cluster_file)
    try:
        with admin_client(tmp_path, port) as client:
            job = client.submit({"name": "train", "command": "echo weights > model.pt; echo done"})
            wait_for(client, job.id, "finished")
        monkeypatch.setenv("CORRAL_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("CORRAL_TOKEN", read_token(tmp_path))
        command = ["artifacts", "push", job.id, "--cluster", "cloud"]
        pushed = CliRunner().invoke(app, [*command, "attempt-1/pod-0/work/model.pt", "--kind", "model"])
        assert pushed.exit_code == 0, pushed.output
        assert f"s3://{bucket.bucket}/default/{job.id}/attempt-1/pod-0/work/model.pt" in pushed.output
        refused = CliRunner().invoke(app, [*command, "attempt-1/pod-0/output.log", "--kind", "log"])
        assert refused.exit_code == 1, refused.output
        assert "only models and checkpoints may be copied to public cluster 'cloud'" in refused.output
        assert "Traceback" not in refused.output
    finally:
        stop(server)
    assert _objects(bucket) == {f"default/{job.id}/attempt-1/pod-0/work/model.pt": b"weights\n"}
