"""The job verbs as a researcher uses them on `corral up`: the options `sbatch`, `squeue` and `sky` users
expect (names, environment, priority, time limit, stdin specs, several ids, one attempt's output), and
errors that say what to type instead."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import admin_client, free_port, stop, wait_for
from typer.testing import CliRunner, Result

from corral.api_models import Job
from corral.cli.main import app
from corral.client import APIError, Client
from corral.paths import read_token
from corral.server.process import start


@pytest.fixture(scope="module")
def up() -> Iterator[tuple[Client, dict[str, str]]]:
    """`corral up --gpus 4` on a free port, and the environment the CLI needs to reach it. Its data dir
    is not under pytest's folder, which the pods' user may not pass through when the tests run as root."""
    folder = Path(tempfile.mkdtemp(prefix="corral-up-"))
    port = free_port()
    process = start(
        ["up", "--data-dir", str(folder), "--port", str(port), "--gpus", "4"], folder / "up.log", port
    )
    try:
        env = {"CORRAL_URL": f"http://127.0.0.1:{port}/api/v1", "CORRAL_TOKEN": read_token(folder) or ""}
        with admin_client(folder, port) as client:
            yield client, env
    finally:
        stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def corral(env: dict[str, str], *arguments: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(arguments), env=env, input=stdin)


def test_run_takes_its_name_from_the_command_and_the_options_a_spec_has(up) -> None:
    client, env = up
    ran = corral(
        env, "run", "--json", "--env", "MODE=offline", "--env", "EQ=a=b", "--priority", "3",
        "--time-limit", "5m", "--queue", "default", "--", "python3 -c 'import os; print(os.environ[\"EQ\"])'",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    job = json.loads(ran.output)
    assert job["name"] == "python3"
    assert job["spec"]["env"] == {"MODE": "offline", "EQ": "a=b"}
    assert (job["spec"]["priority"], job["spec"]["time_limit"], job["queue"]) == (3, 300.0, "default")
    wait_for(client, job["id"], "finished")
    assert client.logs(job["id"]) == "a=b\n"
    assert json.loads(corral(env, "run", "--json", "--", "/usr/bin/env", "true").output)["name"] == "env"
    named = corral(env, "run", "--json", "--name", "mine", "--", "true")
    assert json.loads(named.output)["name"] == "mine"
    bad = corral(env, "run", "--env", "NOEQUALS", "--", "true")
    assert bad.exit_code == 2 and "--env 'NOEQUALS': expected KEY=VALUE" in bad.output


def test_submit_reads_a_spec_from_stdin_or_from_f(up, tmp_path: Path) -> None:
    _, env = up
    piped = corral(env, "submit", "--json", "-", stdin="name: piped\ncommand: echo piped\n")
    assert piped.exit_code == 0, piped.output
    assert json.loads(piped.output)["name"] == "piped"
    spec = tmp_path / "job.yaml"
    spec.write_text("name: from-file\ncommand: echo file\n")
    assert json.loads(corral(env, "submit", "--json", "-f", str(spec)).output)["name"] == "from-file"
    broken = corral(env, "submit", "-", stdin="name: x\n")
    assert broken.exit_code == 2 and "<stdin>" in broken.output and "command" in broken.output
    neither = corral(env, "submit")
    assert neither.exit_code == 2 and "name one job spec" in neither.output


def test_ls_shows_gpus_node_and_age_and_refuses_a_status_that_does_not_exist(up) -> None:
    client, env = up
    job = client.submit({"name": "holds", "command": "sleep 60", "resources": {"gpus": 2}})
    wait_for(client, job.id, "running")
    listed = corral(env, "ls", "--status", "running")
    assert listed.exit_code == 0, listed.output
    header = next(line for line in listed.output.splitlines() if "status" in line)
    assert all(column in header for column in ("GPUs", "node", "age"))
    row = next(line for line in listed.output.splitlines() if job.id in line)
    assert " 2 " in row and client.nodes()[0].name in row
    assert client.job(job.id).nodes == [client.nodes()[0].name]
    bogus = corral(env, "ls", "--status", "bogus")
    assert bogus.exit_code == 2
    assert "--status 'bogus': choose one of pending, running, finished, failed, cancelled" in bogus.output
    with pytest.raises(APIError, match="pending"):  # the API refuses it too, naming the statuses
        client.jobs(status="bogus")
    client.cancel(job.id)


def test_cancel_takes_several_ids_and_names_each_it_could_not_cancel(up) -> None:
    client, env = up
    first, second = (client.submit({"name": f"c{i}", "command": "sleep 60"}) for i in range(2))
    cancelled = corral(env, "cancel", first.id, "j-000000000000", second.id)
    assert cancelled.exit_code == 2
    assert f"{first.id} cancelled" in cancelled.output and f"{second.id} cancelled" in cancelled.output
    assert "no job 'j-000000000000'" in cancelled.output
    assert {client.job(first.id).status, client.job(second.id).status} == {"cancelled"}


def test_logs_shows_an_earlier_attempt(up) -> None:
    client, env = up
    job = client.submit(
        {
            "name": "flaky",
            "retries": 1,
            "command": 'echo "attempt $CORRAL_ATTEMPT"; [ $CORRAL_ATTEMPT -gt 1 ]',
        }
    )
    wait_for(client, job.id, "finished", timeout=30)
    assert corral(env, "logs", job.id).output == "attempt 2\n"
    assert corral(env, "logs", "--attempt", "1", job.id).output == "attempt 1\n"
    why = json.loads(corral(env, "why", "--json", job.id).output)
    assert (why["id"], why["status"]) == (job.id, "finished")
    missing = corral(env, "logs", "--attempt", "3", job.id)
    assert missing.exit_code == 2 and "in attempt 3" in missing.output


def test_server_refusals_keep_their_brackets(up) -> None:
    _, env = up
    refused = corral(env, "run", "--name", "Bad[a-z0-9]", "--", "true")
    assert refused.exit_code == 2
    assert "[a-z0-9]" in refused.output and "'Bad[a-z0-9]'" in refused.output


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "jobs"


@pytest.mark.parametrize(
    "spec",
    sorted(str(path.relative_to(EXAMPLES)) for path in EXAMPLES.rglob("*.yaml")),
)
def test_every_example_job_runs_on_corral_up_as_written(up, spec: str) -> None:
    """README's tour: `corral up --gpus 4`, then `corral submit examples/jobs/...`: each finishes (the
    preemption example's `workdir: .` ships train.py)."""
    client, env = up
    submitted = corral(env, "submit", "--json", str(EXAMPLES / spec))
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.output)
    ended = _ended(client, job["id"])
    assert ended.status == "finished", f"{ended.reason}\n{client.logs(job['id'])}"
    assert client.logs(job["id"]).strip(), "the example printed nothing"


def test_run_ships_a_local_folder_and_runs_setup_before_the_command(up, tmp_path: Path) -> None:
    client, env = up
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print(open('config.txt').read().strip())\n")
    (project / "config.txt").write_text("lr=0.1\n")
    (project / "data.bin").write_bytes(b"\0" * 10)
    (project / ".corralignore").write_text("*.bin\n")
    arguments = ["run", "--json", "--workdir", str(project), "--setup", "ls > listing.txt", "--"]
    ran = corral(env, *arguments, "cat listing.txt; python3 train.py")
    assert ran.exit_code == 0, ran.output
    job = json.loads(ran.stdout)
    assert f"{project}: 3 files" in ran.stderr and "uploaded" in ran.stderr  # data.bin left out
    wait_for(client, job["id"], "finished")
    assert client.logs(job["id"]) == "config.txt\nlisting.txt\ntrain.py\nlr=0.1\n"
    again = corral(env, *arguments, "true")
    assert "already on the server" in again.stderr
    assert json.loads(again.stdout)["spec"]["code"] == job["spec"]["code"]
    failing = corral(env, "run", "--json", "--setup", "exit 7", "--", "echo never")
    failed = json.loads(failing.output)["id"]
    wait_for(client, failed, "failed")
    assert "never" not in client.logs(failed)


def _ended(client: Client, job_id: str, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while (job := client.job(job_id)).status in ("pending", "running"):
        assert time.monotonic() < deadline, f"{job_id} is still {job.status}: {job.reason}"
        time.sleep(0.1)
    return job


def test_why_says_which_scheduling_round_its_reason_describes(up) -> None:
    """A job asking for more GPUs than are free waits; its reason carries the round's time, which is
    after its submission, and an ended job's does not."""
    client, env = up
    submitted = time.time()
    blocker = client.submit({"name": "hold", "command": "sleep 60", "resources": {"gpus": 4}})
    wait_for(client, blocker.id, "running")
    waiting = client.submit({"name": "waits", "command": "true", "resources": {"gpus": 2}})
    deadline = time.monotonic() + 30
    while (why := client.why(waiting.id)).reason is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert why.status == "pending" and why.reason is not None
    assert why.explained_at is not None and why.explained_at >= submitted
    assert "as of the scheduling round at" in corral(env, "why", waiting.id).output
    client.cancel(waiting.id)
    client.cancel(blocker.id)
    assert client.why(waiting.id).explained_at is None


def test_an_upload_reports_its_progress_chunk_by_chunk(up, tmp_path: Path) -> None:
    from corral.workdirs import pack

    client, _ = up
    project = tmp_path / "big"
    project.mkdir()
    (project / "weights.bin").write_bytes(os.urandom(3 << 20))  # random: gzip leaves it 3 MiB
    packed = pack(project)
    sent: list[int] = []
    uploaded = client.upload_code(packed, sent.append)
    assert uploaded.stored and uploaded.size == len(packed.data)
    assert len(sent) > 1 and sum(sent) == len(packed.data)
    assert client.upload_code(packed, sent.append).stored is False  # already there: nothing sent
    assert sum(sent) == len(packed.data)
