"""Experiment tracking and the model registry through a real corral server with a real MLflow behind it
(local backend, pods running the stock ``mlflow`` client), on SQLite and on PostgreSQL.

One server per database for the whole module: MLflow's first migrations take seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port, stop, stop_pods, wait_for

from corral.client import APIError, Client
from corral.paths import read_token
from corral.server.process import start
from corral.store.local_postgres import fresh_database

pytest.importorskip("mlflow")

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

CLUSTER = """
clusters:
  - name: lab
    pools:
      - name: cpu
        flavor: t4
        count: 1
        node: {cpu: 16, memory_gib: 32, gpus: 2, gpu_model: T4, gpu_memory_gib: 16}
"""

TRAIN = """
import os, sys, mlflow
attempt = int(os.environ["CORRAL_ATTEMPT"])
mlflow.log_metric("loss", 1.0 / attempt, step=attempt)
mlflow.log_param("lr", "0.1") if attempt == 1 else None
if os.environ.get("LOG_MODEL") and attempt >= int(os.environ.get("FAIL_UNTIL", "0")):
    if os.environ["LOG_MODEL"] == "sklearn":  # an MLflow 3 logged model
        from sklearn.linear_model import LogisticRegression
        model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    else:  # a folder of the run's artifacts
        os.makedirs("model", exist_ok=True)
        with open("model/MLmodel", "w") as description:  # what makes MLflow take the folder for a model
            description.write("flavors: {}")
        mlflow.log_artifacts("model", "model")
    version = mlflow.register_model(f"runs:/{mlflow.active_run().info.run_id}/model", "inside")
    mlflow.MlflowClient().set_registered_model_alias("inside", "staging", version.version)
if attempt < int(os.environ.get("FAIL_UNTIL", "0")):
    sys.exit(3)
"""

HOLD = """
import os, time, pathlib
print("TOKEN", os.environ["MLFLOW_TRACKING_TOKEN"], flush=True)
time.sleep(120)
"""


def pod_python() -> tuple[str, dict[str, str]]:
    """A Python with MLflow that the pod's user may run. This interpreter, when others may run it; else
    (a root's pyenv under /root) the system's of the same version with this one's packages."""
    executable = os.path.realpath(sys.executable)
    if os.geteuid() != 0 or _others_may_run(executable):
        return sys.executable, {}
    system = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if system is None or not os.path.realpath(system).endswith(version):
        pytest.skip("no Python with MLflow that a pod's user may run")
    return system, {"PYTHONPATH": sysconfig.get_paths()["purelib"]}


def _others_may_run(path: str) -> bool:
    folder = Path(path)
    return all(os.stat(p).st_mode & 0o001 for p in [*folder.parents, folder] if p != Path("/"))


@dataclass
class Deployment:
    url: str
    data_dir: Path
    database: str
    admin: Client
    lab: Client
    """A member of tenant ``lab``."""
    lab_token: str
    other_token: str
    """A member of tenant ``other``."""
    python: str
    python_env: dict[str, str]

    def submit(self, client: Client, script: str, name: str, **spec: object) -> str:
        folder = self.data_dir.parent / "scripts"
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
        path = folder / f"{name}.py"
        path.write_text(script)
        path.chmod(0o644)
        env = self.python_env | dict(spec.pop("env", {}))  # type: ignore[call-overload]
        body = {"name": name, "command": [self.python, str(path)], "env": env, **spec}
        return client.submit(body).id


class Tracking:
    """MLflow's stock client for one token. MLflow reads the token from the environment on every request,
    so each call sets it first (the tests' clients of several tenants take turns in one process)."""

    def __init__(self, url: str, token: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=f"{url}/mlflow", registry_uri=f"{url}/mlflow")
        self.token = token

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            os.environ["MLFLOW_TRACKING_TOKEN"] = self.token
            return method(*args, **kwargs)

        return call


def mlflow_client(url: str, token: str) -> Tracking:
    return Tracking(url, token)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    root = Path(tempfile.mkdtemp(prefix="corral-mlops-"))  # pods pass through it: not pytest's folder
    root.chmod(0o711)
    data_dir = root / "data"
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_TRACKING_TOKEN": ""}
    database = "sqlite"
    if request.param == "postgresql":
        env["CORRAL_DATABASE_URL"] = fresh_database(request.getfixturevalue("postgres"))
        database = "postgresql"
    cluster = root / "cluster.yaml"
    cluster.write_text(CLUSTER)
    port = free_port()
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    arguments = ["server", "--data-dir", str(data_dir), "--port", str(port), "--cluster", str(cluster)]
    server = start([*arguments, "--interval", "0.2"], root / "server.log", port, timeout=120)
    url = f"http://127.0.0.1:{port}"
    admin = Client(url, token=read_token(data_dir))
    _wait_for_mlflow(url, read_token(data_dir))
    tokens = {}
    for tenant in ("lab", "other"):
        admin.create_tenant(tenant)
        tokens[tenant] = admin.create_user(f"{tenant}-member", tenant, "member").token
    python, python_env = pod_python()
    lab = Client(url, token=tokens["lab"])
    try:
        yield Deployment(
            url,
            data_dir,
            database,
            admin,
            lab,
            tokens["lab"],
            tokens["other"],
            python,
            python_env,
        )
    finally:
        admin.close()
        lab.close()
        stop(server)
        stop_pods(root)  # a replica the server had not stopped yet (pods outlive their server)
        for name, value in previous.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_mlflow(url: str, token: str) -> None:
    """MLflow opens in the background after the server starts (/mlflow answers 503 until then)."""
    deadline = time.monotonic() + 180
    headers = {"Authorization": f"Bearer {token}"}
    while httpx.get(f"{url}/mlflow/api/3.0/mlflow/server-info", headers=headers).status_code == 503:
        assert time.monotonic() < deadline, "MLflow never opened"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def trained(deployment: Deployment) -> str:
    """A job of tenant ``lab`` that failed once and was retried, logging a metric each attempt, a model
    on its second, and registering it from inside the job."""
    job_id = deployment.submit(
        deployment.lab,
        TRAIN,
        "train",
        retries=1,
        # Both kinds of model, one per database (sklearn's import alone takes seconds).
        env={"FAIL_UNTIL": "2", "LOG_MODEL": "sklearn" if deployment.database == "sqlite" else "files"},
        resources={"gpus": 1},
    )
    deadline = time.monotonic() + 180
    while deployment.lab.job(job_id).status not in ("finished", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} never ended"
        time.sleep(0.1)
    assert deployment.lab.job(job_id).status == "finished", deployment.lab.logs(job_id)
    return job_id


def _run_of(client: Tracking, job_id: str) -> Any:
    runs = _runs_of(client, job_id)
    assert len(runs) == 1, runs
    return runs[0]


def test_a_job_s_metrics_land_in_its_run_and_a_retry_continues_it(
    deployment: Deployment, trained: str
) -> None:
    member = mlflow_client(deployment.url, deployment.lab_token)
    run = _run_of(member, trained)
    assert [m.value for m in member.get_metric_history(run.info.run_id, "loss")] == [1.0, 0.5]
    assert run.data.params == {"lr": "0.1"}
    tags = run.data.tags
    assert tags["corral.job_id"] == trained and tags["corral.attempt"] == "2"
    assert (tags["corral.tenant"], tags["corral.queue"], tags["corral.gpus"]) == ("lab", "default", "1")
    assert tags["corral.node"] == "cpu-0"
    assert run.info.status == "FINISHED"
    assert member.get_experiment(run.info.experiment_id).name == "default"  # the member's own name
    admin = mlflow_client(deployment.url, read_token(deployment.data_dir))
    assert admin.get_experiment(run.info.experiment_id).name == "lab/default"  # stored per tenant
    assert admin.get_run(run.info.run_id).data.metrics == {"loss": 0.5}


def test_a_tenant_sees_and_writes_only_its_own_experiments_runs_artifacts_and_models(
    deployment: Deployment, trained: str
) -> None:
    from mlflow.exceptions import MlflowException

    lab = mlflow_client(deployment.url, deployment.lab_token)
    run = _run_of(lab, trained)
    other = mlflow_client(deployment.url, deployment.other_token)
    assert [e.name for e in other.search_experiments()] == []
    for attempt in (
        lambda: other.get_run(run.info.run_id),
        lambda: other.log_metric(run.info.run_id, "stolen", 1.0),
        lambda: other.get_experiment(run.info.experiment_id),
        lambda: other.search_runs([run.info.experiment_id]),
        lambda: other.get_registered_model("inside"),
        lambda: other.create_model_version("mine", f"runs:/{run.info.run_id}/model", run.info.run_id),
    ):
        with pytest.raises(MlflowException) as refused:
            attempt()
        assert refused.value.get_http_status_code() == 404, refused.value
    with pytest.raises(MlflowException) as refused:
        other.download_artifacts(run.info.run_id, "", tempfile.mkdtemp())
    assert refused.value.get_http_status_code() == 404
    artifact_path = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    headers = {"Authorization": f"Bearer {deployment.other_token}"}
    stolen = httpx.get(
        f"{deployment.url}/mlflow/api/2.0/mlflow-artifacts/artifacts/{artifact_path}", headers=headers
    )
    assert stolen.status_code == 404 and stolen.json()["detail"]
    # Both tenants may have a model called the same: each sees its own.
    other_experiment = other.create_experiment("default")
    other_run = other.create_run(other_experiment)
    other.create_registered_model("inside")
    assert [m.name for m in other.search_registered_models()] == ["inside"]
    assert lab.get_registered_model("inside").aliases == {"staging": "1"}
    assert other.get_registered_model("inside").aliases == {}
    assert [e.name for e in lab.search_experiments()] == ["default"]
    assert other.get_run(other_run.info.run_id).info.experiment_id == other_experiment
    listed = httpx.get(f"{deployment.url}/mlflow/api/2.0/mlflow/not-a-route", headers=headers)
    assert listed.status_code == 404  # what is not allowed is refused, not passed through


def test_a_job_token_is_for_tracking_only_and_only_while_its_job_runs(deployment: Deployment) -> None:
    with contextlib.ExitStack() as stack:
        _job_token_is_tracking_only(deployment, stack)


def _job_token_is_tracking_only(deployment: Deployment, stack: contextlib.ExitStack) -> None:
    job_id = deployment.submit(deployment.lab, HOLD, "hold")
    wait_for(deployment.lab, job_id, "running", timeout=30)
    token = _token_from_output(deployment.lab, job_id)
    assert token.startswith("corral_j")
    as_job = stack.enter_context(Client(deployment.url, token=token))
    for call in (
        as_job.jobs,
        lambda: as_job.cancel(job_id),
        lambda: as_job.submit({"name": "x", "command": "true"}),
    ):
        with pytest.raises(APIError) as refused:
            call()
        assert refused.value.status == 403
    headers = {"Authorization": f"Bearer {token}"}
    tokens = httpx.post(f"{deployment.url}/api/v1/tokens", json={}, headers=headers)
    assert tokens.status_code == 403
    tracking = mlflow_client(deployment.url, token)
    run = _run_of(tracking, job_id)
    tracking.log_metric(run.info.run_id, "seen", 1.0)
    # An agent asking for its node's pods gets the same run, reached at the URL it used for the server.
    (pod,) = [p for p in deployment.admin.node_pods("cpu-0") if p.job_id == job_id]
    assert pod.tracking["MLFLOW_TRACKING_URI"] == f"{deployment.url}/mlflow"
    assert pod.tracking["MLFLOW_RUN_ID"] == run.info.run_id and pod.tracking["MLFLOW_TRACKING_TOKEN"] == token
    deployment.lab.cancel(job_id)
    wait_for(deployment.lab, job_id, "cancelled")
    deadline = time.monotonic() + 30
    search = f"{deployment.url}/mlflow/api/2.0/mlflow/experiments/search"
    while httpx.post(search, json={"max_results": 1}, headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "the job's token still works after the job ended"
        time.sleep(0.2)
    member = mlflow_client(deployment.url, deployment.lab_token)
    while member.get_run(run.info.run_id).info.status != "KILLED":
        assert time.monotonic() < deadline, "the cancelled job's run was never ended"
        time.sleep(0.2)


def test_jobs_that_wait_get_their_run_before_they_start_and_a_cancelled_one_leaves_it_killed(
    deployment: Deployment,
) -> None:
    """Runs are made for waiting jobs: one that starts later logs into that run, tagged with its node;
    one cancelled while it waits has its run ended, not left RUNNING."""
    holder = deployment.lab.submit({"name": "holder", "command": "sleep 60", "resources": {"gpus": 2}}).id
    wait_for(deployment.lab, holder, "running", timeout=30)
    waiting = {"command": "echo RUN=$MLFLOW_RUN_ID", "resources": {"gpus": 1}}
    later = deployment.lab.submit({"name": "later"} | waiting).id
    dropped = deployment.lab.submit({"name": "dropped"} | waiting).id
    member = mlflow_client(deployment.url, deployment.lab_token)
    deadline = time.monotonic() + 30
    while not all(_runs_of(member, job_id) for job_id in (later, dropped)):
        assert time.monotonic() < deadline, "no run was made for the waiting jobs"
        time.sleep(0.2)
    assert deployment.lab.job(later).status == "pending"
    deployment.lab.cancel(dropped)
    deployment.lab.cancel(holder)
    wait_for(deployment.lab, later, "finished", timeout=30)
    run = _run_of(member, later)
    assert f"RUN={run.info.run_id}" in deployment.lab.logs(later)
    assert run.data.tags["corral.node"] == "cpu-0" and run.data.tags["corral.attempt"] == "1"
    assert run.data.tags["corral.tenant"] == "lab" and run.data.tags["corral.job_name"] == "later"
    assert member.get_experiment(run.info.experiment_id).name == "default"
    while member.get_run(_run_of(member, dropped).info.run_id).info.status != "KILLED":
        assert time.monotonic() < deadline, "the run of the job cancelled while it waited is still RUNNING"
        time.sleep(0.2)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as refused:  # another tenant does not see it
        mlflow_client(deployment.url, deployment.other_token).get_run(run.info.run_id)
    assert refused.value.get_http_status_code() == 404


def _runs_of(client: Tracking, job_id: str) -> list[Any]:
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments], f"tags.`corral.job_id` = '{job_id}'")


def _token_from_output(client: Client, job_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            output = client.logs(job_id)
        except APIError:  # its pod has not started yet
            output = ""
        for line in output.splitlines():
            if line.startswith("TOKEN "):
                return line.split()[1]
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never printed its token")


def _corral(deployment: Deployment, *arguments: str) -> dict:
    env = os.environ | {"CORRAL_URL": deployment.url, "CORRAL_TOKEN": deployment.lab_token}
    done = subprocess.run(
        [sys.executable, "-m", "corral", *arguments], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_register_alias_and_show_through_the_cli(deployment: Deployment, trained: str) -> None:
    version = _corral(deployment, "models", "register", trained, "model", "--name", "iris", "--json")
    assert (version["name"], version["version"]) == ("iris", 1)
    logged = deployment.database == "sqlite"  # a logged model there, a folder of the run's artifacts else
    assert version["source"].startswith("models:/m-" if logged else "mlflow-artifacts:/")
    assert version["lineage"]["job"] == trained
    assert deployment.lab.register_model(trained, "model", "iris")["version"] == 2
    moved = _corral(deployment, "models", "alias", "iris@champion", "2", "--json")
    assert moved["aliases"] == {"champion": 2}
    shown = _corral(deployment, "models", "show", "iris", "--json")
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][1]["aliases"] == ["champion"]
    assert shown["versions"][0]["lineage"]["attempt"] == "2"
    assert sorted(m["name"] for m in deployment.lab.models()) == ["inside", "iris"]
    with pytest.raises(APIError) as refused:
        with Client(deployment.url, token=deployment.other_token) as other:
            other.model("iris")
    assert refused.value.status == 404
    with pytest.raises(APIError) as refused:
        deployment.lab.register_model(trained, "no-such-artifact", "iris")
    assert refused.value.status == 422


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")  # MLflow's own SQLAlchemy use
def test_serving_resolves_an_alias_to_its_version_and_files(deployment: Deployment, trained: str) -> None:
    """What serving calls: ``models:/NAME@ALIAS`` of a tenant to a version and a folder to load."""
    if deployment.database != "sqlite":
        pytest.skip("reads the server's SQLite store from this process")
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    from corral.mlops.registry import Registry, RegistryError
    from corral.mlops.stores import SERVED_ARTIFACTS_ROOT, MlflowStores, mlflow_location

    location = mlflow_location(deployment.data_dir, "sqlite://")
    tracking = TrackingStore(location.backend_uri, SERVED_ARTIFACTS_ROOT)
    registry = Registry(MlflowStores(location, tracking, RegistryStore(location.backend_uri)), tracking=None)  # type: ignore[arg-type]
    staging = registry.resolve("lab", "models:/inside@staging")
    assert staging.version == 1 and staging.uri.startswith("mlflow-artifacts:/")
    assert staging.path is not None and (staging.path / "MLmodel").is_file()
    assert registry.resolve("lab", "models:/inside/1").path == staging.path
    assert registry.alias_version("lab", "inside", "staging") == 1
    assert registry.alias_version("other", "inside", "staging") is None  # per tenant
    with pytest.raises(RegistryError):
        registry.resolve("other", "models:/inside@staging")


def test_a_service_serves_a_registry_alias_from_a_copy_shipped_to_its_replica(
    deployment: Deployment, trained: str
) -> None:
    """`model: models:/inside@staging` through corral's own registry: the version's artifacts are packed
    into the tenant's uploads and the replica (a job of the tenant's pod user, who may not read the
    server's artifact folder) starts in a copy of them and answers predictions through the gateway."""
    if deployment.database != "sqlite":
        pytest.skip("the logged scikit-learn model is made on the SQLite deployment")
    spec = {
        "type": "service",
        "name": "inside",
        "model": "models:/inside@staging",
        "resources": {"cpu": 0.5, "memory": "1GiB"},
        "replicas": {"min": 0, "max": 1},
        "readiness": {"path": "/health", "timeout": "170s"},
        "hold_timeout": "170s",
    }
    served = deployment.lab.apply_service(spec)
    assert served["revision"] == 1
    answer = httpx.post(
        f"{deployment.url}/services/lab/inside/predict",
        json={"inputs": [[0.0], [3.0]]},
        headers={"Authorization": f"Bearer {deployment.lab_token}"},
        timeout=180,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [0, 1]}
    replicas = [j for j in deployment.lab.jobs() if j.spec.get("name", "").startswith("inside-r1")]
    assert replicas and all((j.spec.get("code") or "").startswith("sha256:") for j in replicas)
    deployment.lab.remove_service("inside")


def test_a_registration_may_not_climb_out_of_its_job_s_run(deployment: Deployment, trained: str) -> None:
    """``..`` in a registration's artifact path once registered any folder: the server's data dir (its
    admin token, tracking key and database) or another tenant's run, which serving then packed into the
    tenant's uploads for its replicas to read."""
    for path in ("../../../..", "model/../../../../1", "../../../1"):
        with pytest.raises(APIError) as refused:
            deployment.lab.register_model(trained, path, "loot")
        assert refused.value.status == 422 and "'..'" in refused.value.detail
    assert "loot" not in [m["name"] for m in deployment.lab.models()]


ATTACK = """
import json, os, pathlib, httpx
tracking = os.environ["MLFLOW_TRACKING_URI"]
server = tracking.removesuffix("/mlflow")
api, artifacts = tracking + "/api/2.0/mlflow", tracking + "/api/2.0/mlflow-artifacts/artifacts"
headers = {"Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]}
other = os.environ["OTHER_EXPERIMENT"]
own = httpx.get(api + "/runs/get", params={"run_id": os.environ["MLFLOW_RUN_ID"]}, headers=headers)
own = own.json()["run"]["info"]["experiment_id"]
seen = {}
def ask(name, method, url, **request):
    answer = httpx.request(method, url, headers=headers, **request)
    seen[name] = answer.status_code
    return answer
ask("jobs", "GET", server + "/api/v1/jobs")
ask("tenants", "POST", server + "/api/v1/tenants", json={"name": "mine"})
ask("tokens", "POST", server + "/api/v1/tokens", json={})
ask("gateway", "GET", server + "/services/other/anything/")
ask("experiment", "GET", api + "/experiments/get", params={"experiment_id": other})
ask("runs", "POST", api + "/runs/search", json={"experiment_ids": [own, other]})
ask("model", "GET", api + "/registered-models/get", params={"name": "attack-target"})
ask("climb", "GET", f"{artifacts}/{own}/../{other}")
ask("listing", "GET", artifacts, params={"path": f"{own}/../{other}"})
ask("source", "POST", api + "/model-versions/create",
    json={"name": "mine", "source": f"mlflow-artifacts:/{own}/../{other}"})
ask("deep", "POST", api + "/runs/search", content=b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}")
ask("nul", "POST", api + "/experiments/create", json={"name": "a\\x00b"})
found = ask("models", "GET", api + "/registered-models/search", params={"filter": "name LIKE 'other.%'"})
seen["models_found"] = len(found.json().get("registered_models", []))
found = ask("experiments", "POST", api + "/experiments/search", json={"filter": "name LIKE 'other/%'", "max_results": 100})
seen["experiments_found"] = len(found.json().get("experiments", []))
for name, path in (("token", "token"), ("database", "corral.db"), ("key", "tracking.key")):
    try:
        (pathlib.Path(os.environ["DATA_DIR"]) / path).read_bytes()
        seen[name] = "read"
    except OSError:
        seen[name] = "denied"
print("SEEN", json.dumps(seen), flush=True)
"""
"""A member's job attacking through the MLflow token it is given: what it gets for each try."""


def test_a_job_s_token_reaches_only_its_own_tenant_s_tracking(deployment: Deployment) -> None:
    """From inside a running job of ``lab``: every API route, the gateway and every way at tenant
    ``other``'s experiment, runs and model it tries (ids, names, searches, ``..``, a model version's
    source) is refused or finds nothing; malformed input is a 400; the server's files are not its."""
    other = mlflow_client(deployment.url, deployment.other_token)
    experiment = other.create_experiment("attack-target")
    other.create_run(experiment)
    other.create_registered_model("attack-target")
    env = {"OTHER_EXPERIMENT": experiment, "DATA_DIR": str(deployment.data_dir)}
    job_id = deployment.submit(deployment.lab, ATTACK, "attack", env=env)
    deadline = time.monotonic() + 60
    while deployment.lab.job(job_id).status not in ("finished", "failed"):
        assert time.monotonic() < deadline, "the attacking job never ended"
        time.sleep(0.1)
    output = deployment.lab.logs(job_id)
    (line,) = [line for line in output.splitlines() if line.startswith("SEEN ")] or [output]
    seen = json.loads(line.removeprefix("SEEN "))
    assert {name: seen[name] for name in ("jobs", "tenants", "tokens")} == dict.fromkeys(
        ("jobs", "tenants", "tokens"), 403
    )
    assert seen["gateway"] == 401
    not_there = ("experiment", "runs", "model", "climb", "listing", "source")
    assert {name: seen[name] for name in not_there} == dict.fromkeys(not_there, 404)
    assert (seen["deep"], seen["nul"]) == (400, 400)
    assert (seen["models"], seen["models_found"], seen["experiments"], seen["experiments_found"]) == (
        200,
        0,
        200,
        0,
    )
    if os.geteuid() == 0:  # only a root server runs pods as another user (docs/security.md)
        assert {name: seen[name] for name in ("token", "database", "key")} == dict.fromkeys(
            ("token", "database", "key"), "denied"
        )
