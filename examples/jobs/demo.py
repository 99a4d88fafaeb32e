"""The control-plane part of `make demo`: start `corral server` on loopback (SQLite and the local backend
in out/corral), submit the example jobs, wait for them to end, show `corral ls` and each pod's output.

    .venv/bin/python examples/jobs/demo.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from corral.client import Client

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO / "out" / "corral"


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    DATA.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "corral",
        "server",
        "--cluster",
        str(REPO / "examples/demo/cluster.yaml"),
    ]
    command += ["--data-dir", str(DATA), "--port", str(port), "--interval", "0.5"]
    with open(DATA / "server.log", "ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        with Client(url) as client:
            while not client.health():
                if server.poll() is not None:
                    sys.exit(f"corral server exited; see {DATA / 'server.log'}")
                time.sleep(0.2)
            print(f"corral server at {url} (store and pod output in {DATA})")
            jobs = [client.submit(path) for path in sorted(HERE.glob("*.yaml"))]
            for job in jobs:
                print(f"submitted {job.id} ({job.name})")
            while any(client.job(job.id).status in ("pending", "running") for job in jobs):
                time.sleep(0.5)
        env = os.environ | {"CORRAL_URL": url}
        subprocess.run([sys.executable, "-m", "corral", "ls"], env=env, check=True)
        for log_file in sorted(DATA.glob("runs/*/attempt-*/pod-*/output.log")):
            if any(job.id in str(log_file) for job in jobs):
                print(f"{log_file.relative_to(DATA)}: {log_file.read_text().strip()}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
