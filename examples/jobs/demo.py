"""The control-plane part of `make demo`: start `corral server` on loopback (SQLite and the local backend
in out/corral), submit the example jobs, wait for them to end, show `corral ls` and each pod's output.

    .venv/bin/python examples/jobs/demo.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO / "out" / "corral"


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    DATA.mkdir(parents=True, exist_ok=True)
    arguments = ["server", "--cluster", str(REPO / "examples/demo/cluster.yaml"), "--data-dir", str(DATA)]
    server = start([*arguments, "--port", str(port), "--interval", "0.5"], DATA / "server.log", port)
    try:
        token = read_token(DATA)
        with Client(url, token=token) as client:
            print(f"corral server at {url} (store and pod output in {DATA})")
            jobs = [client.submit(path) for path in sorted(HERE.glob("*.yaml"))]
            for job in jobs:
                print(f"submitted {job.id} ({job.name})")
            while any(client.job(job.id).status in ("pending", "running") for job in jobs):
                time.sleep(0.5)
        env = os.environ | {"CORRAL_URL": url, "CORRAL_TOKEN": token or ""}
        subprocess.run([sys.executable, "-m", "corral", "ls"], env=env, check=True)
        for log_file in sorted(DATA.glob("runs/*/attempt-*/pod-*/output.log")):
            if any(job.id in str(log_file) for job in jobs):
                print(f"{log_file.relative_to(DATA)}: {log_file.read_text().strip()}")
    finally:
        stop(server, kill=False)


if __name__ == "__main__":
    main()
