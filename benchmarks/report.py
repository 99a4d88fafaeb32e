"""Turn the JSON of `corral bench fragmentation` and `corral bench throughput` into docs/benchmarks.md
tables and docs/img plots.

    .venv/bin/python benchmarks/report.py [--results benchmarks/results]

Reads ``fragmentation-<variant>*.json`` (several files of one variant are merged, policy by policy) and
``throughput-<cluster>.json``; rewrites the blocks between the ``fragmentation`` and ``throughput``
markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
IMAGES = REPO / "docs" / "img"
MARKS = ("90", "95", "100", "110", "120", "130")
PUBLISHED = {  # unallocated GPU % on the default trace, median of 10 seeds (Weng et al., ATC'23 artifact)
    "random": {"95": 14.32, "100": 13.75, "130": 12.62},
    "dot-product": {"95": 9.47, "100": 9.44, "130": 9.20},
    "gpu-clustering": {"95": 8.47, "100": 8.42, "130": 8.21},
    "gpu-packing": {"95": 8.24, "100": 8.19, "130": 7.94},
    "best-fit": {"95": 7.14, "100": 7.09, "130": 6.89},
    "fgd": {"95": 5.09, "100": 4.77, "130": 4.60},
}


def load_fragmentation(results: Path) -> dict[str, dict[str, object]]:
    """Variant -> merged report (its ``policies`` from every file of that variant)."""
    merged: dict[str, dict[str, object]] = {}
    for path in sorted(results.glob("fragmentation-*.json")):
        report = json.loads(path.read_text())
        into = merged.setdefault(report["variant"], {"seeds": report["seeds"], "policies": {}})
        into["policies"].update(report["policies"])  # type: ignore[attr-defined]
    return merged


def fragmentation_block(reports: dict[str, dict[str, object]]) -> list[str]:
    lines = []
    default = reports.get("default")
    if default is not None:
        policies = default["policies"]
        lines += [
            f"Default trace, median of {len(default['seeds'])} seeds (seeds {default['seeds'][0]}.."
            f"{default['seeds'][-1]}); in brackets the published figure.",
            "",
            "| policy | "
            + " | ".join(f"{m}%" for m in MARKS)
            + " | frag rate at 100% | s/seed | shares moved |",
            "|---|" + "---|" * (len(MARKS) + 3),
        ]
        for name, row in policies.items():  # type: ignore[attr-defined]
            cells = []
            for mark in MARKS:
                value = row["unallocated_pct"].get(mark)
                published = PUBLISHED.get(name, {}).get(mark)
                cell = "-" if value is None else f"{value:.2f}"
                cells.append(cell + (f" ({published:.2f})" if published is not None else ""))
            rate = row["frag_rate_pct"].get("100")
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {rate:.1f} | {row['seconds']:.1f} | "
                f"{row.get('migrations', 0):g} |"
            )
        lines += ["", "![Unallocated GPU by arrived workload](img/fragmentation-default.png)", ""]
        plot_curves(policies, IMAGES / "fragmentation-default.png")  # type: ignore[arg-type]
    variants = sorted(v for v in reports if v != "default")
    if variants:
        names = sorted({n for v in variants for n in reports[v]["policies"]})  # type: ignore[attr-defined]
        lines += [
            "Variants: unallocated GPU % at 100% arrived, median of "
            f"{len(reports[variants[0]]['seeds'])} seeds; last column corral-fgd / fgd.",
            "",
            "| variant | " + " | ".join(names) + " | corral-fgd / fgd |",
            "|---|" + "---|" * (len(names) + 1),
        ]
        for variant in variants:
            policies = reports[variant]["policies"]
            at_100 = {n: policies[n]["unallocated_pct"].get("100") for n in names if n in policies}  # type: ignore[index]
            ratio = (
                f"{at_100['corral-fgd'] / at_100['fgd']:.2f}"
                if at_100.get("corral-fgd") is not None and at_100.get("fgd")
                else "-"
            )
            cells = [f"{at_100[n]:.2f}" if at_100.get(n) is not None else "-" for n in names]
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {ratio} |")
        lines.append("")
    return lines


def plot_curves(policies: dict[str, dict[str, dict[str, float]]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for name, row in policies.items():
        if "(hindsight)" in name:
            continue
        marks = [m for m in MARKS if m in row["unallocated_pct"]]
        axis.plot([int(m) for m in marks], [row["unallocated_pct"][m] for m in marks], marker="o", label=name)
    axis.set_xlabel("arrived workload (% of cluster GPU capacity)")
    axis.set_ylabel("unallocated GPU (%)")
    axis.set_title("openb default trace, 1213 nodes / 6212 GPUs (cf. FGD paper Fig. 9a)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def throughput_block(results: Path) -> list[str]:
    lines = [
        "| cluster | policy | nodes | pending pods | placed | seconds | placements/s | pods decided/s "
        "| peak RSS MiB | placements/s vs fifo |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for path in sorted(results.glob("throughput-*.json")):
        for cluster, by_policy in json.loads(path.read_text())["runs"].items():
            for policy, runs in by_policy.items():
                rows += [(cluster, policy, run) for run in runs]
    if not rows:
        return []
    fifo = {(c, r["nodes"], r["pods"]): r for c, p, r in rows if p == "fifo"}
    for cluster, policy, run in rows:
        base = fifo.get((cluster, run["nodes"], run["pods"]))
        ratio = f"{run['placements_per_second'] / base['placements_per_second']:.2f}x" if base else "-"
        lines.append(
            f"| {cluster} | {policy} | {run['nodes']} | {run['pods']} | {run['placed']} | {run['seconds']:.1f} "
            f"| {run['placements_per_second']:.0f} | {run['pods'] / run['seconds']:.0f} "
            f"| {run['peak_rss_mib']:.0f} | {ratio} |"
        )
    plot_throughput(rows, IMAGES / "throughput.png")
    return lines + ["", "![Placements per second by nodes and by pending pods](img/throughput.png)", ""]


def plot_throughput(rows: list[tuple[str, str, dict[str, float]]], out: Path) -> None:
    """Left: placements/s by nodes at 100k pending pods; right: seconds by pending pods at 10k nodes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    figure, (by_nodes, by_pods) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for cluster, policy, run in rows:
        if run["pods"] == 100_000:
            series.setdefault(("nodes", cluster, policy), []).append(
                (run["nodes"], run["placements_per_second"])
            )
        if run["nodes"] == 10_000 and cluster == "openb":
            series.setdefault(("pods", cluster, policy), []).append((run["pods"], run["seconds"]))
    for (kind, cluster, policy), points in sorted(series.items()):
        axis = by_nodes if kind == "nodes" else by_pods
        xs, ys = zip(*sorted(set(points)), strict=True)
        axis.plot(xs, ys, "-" if cluster == "openb" else "--", marker="o", label=f"{policy} ({cluster})")
    by_nodes.set(xscale="log", xlabel="nodes", ylabel="placements per second", title="100,000 pending pods")
    by_pods.set(xscale="log", yscale="log", xlabel="pending pods", ylabel="seconds for the round")
    by_pods.set_title("10,000 openb nodes")
    for axis in (by_nodes, by_pods):
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def replace_block(text: str, name: str, lines: list[str]) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = "\n".join([start, *lines, end])
    if start in text and end in text:
        return text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_result(out: Path, fields: dict[str, object]) -> dict[str, object]:
    """Write a benchmark's result JSON with what makes it reproducible first: the command as run, the
    date, the machine and the Python; returns what was written."""
    result: dict[str, object] = {
        "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "date": date.today().isoformat(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        **fields,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def publish(name: str, lines: list[str]) -> None:
    """Replace the ``name`` block of docs/benchmarks.md with ``lines`` and print them."""
    DOC.write_text(replace_block(DOC.read_text(), name, lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    text = DOC.read_text()
    text = replace_block(text, "fragmentation", fragmentation_block(load_fragmentation(args.results)))
    text = replace_block(text, "throughput", throughput_block(args.results))
    DOC.write_text(text)


if __name__ == "__main__":
    main()
