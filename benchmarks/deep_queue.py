"""What forecasts cost on a deep queue: one replay with 20,000 jobs waiting, forecasts on against off.

    .venv/bin/python benchmarks/deep_queue.py [--jobs 20000] [--out benchmarks/results/deep-queue.json]

The scenario and both replays are ``corral.bench.deep_queue``. Writes the JSON and the table between the
``deep_queue`` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from report import replace_block

from corral.bench.deep_queue import build_deep_queue, forecast_overhead

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"


def table(result: dict[str, object]) -> list[str]:
    lines = [
        "| forecasts | replay s | scheduler s | forecast s | forecasts made | rounds | started | waiting at end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("off", "on"):
        run = result[name]
        assert isinstance(run, dict)
        lines.append(
            f"| {name} | {run['seconds']:.1f} | {run['scheduler_seconds']:.1f} | {run['forecast_seconds']:.1f} "
            f"| {run['forecasts']} | {run['rounds']} | {run['started']} | {run['waiting_at_end']} |"
        )
    lines += [
        "",
        f"Ratio on / off: **{result['ratio']:.2f}x** ({result['jobs']} jobs, {platform.machine()}).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "deep-queue.json")
    args = parser.parse_args()
    result = forecast_overhead(build_deep_queue(jobs=args.jobs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    DOC.write_text(replace_block(DOC.read_text(), "deep_queue", table(result)))
    print("\n".join(table(result)))


if __name__ == "__main__":
    main()
