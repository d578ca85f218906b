"""Table and figure of docs/RESULTS.md, "Which read-out": the digit runs of
examples/probe_families.sh, read by linear and by one-hidden-layer probes.

    python examples/probe_families.py runs/probe_families --figure docs/figures/probe_families.png

Every run directory ``<family>_s<seed>`` under the given directory is one seed of one family. Per
family and layer the table gives coarse, fine and fine beyond coarse: peak and final value of a
running mean over --smooth measurements, mean ± sd over the seeds, and the drop from peak to
final (from a peak of at least 0.05 bits); then the measurements whose chosen probe did not
converge. The figure has two panels per layer, fine beyond coarse and coarse against the step,
every seed of both families overlaid. A second table pairs the two families seed by seed.
"""
from __future__ import annotations

import argparse
import os
import statistics
from collections import defaultdict

from uinfo_fast.experiments import load_run
from uinfo_fast.experiments.plots import running_mean
from uinfo_fast.tracking.log import measured

FAMILIES = ("linear", "mlp")
COLOURS = {"linear": "tab:blue", "mlp": "tab:orange"}
# A drop is given only from a peak of at least this many bits: below it, a share of the bootstrap
# noise is no drop.
MIN_PEAK = 0.05


def runs_by_family(root: str, seeds: set[str] | None = None) -> dict[str, list[str]]:
    out = defaultdict(list)
    for name in sorted(os.listdir(root)):
        family, _, seed = name.partition("_s")
        if (family in FAMILIES and (seeds is None or seed in seeds)
                and os.path.exists(os.path.join(root, name, "summary.json"))):
            out[family].append(os.path.join(root, name))
    return dict(out)


def curve(rows: list[dict], layer: str, label: str, key: str = "bits") -> tuple[list[int], list[float]]:
    pts = sorted((r["step"], r[key]) for r in rows if r["feature_set"] == layer and r["label_set"] == label
                 and measured(r) and r.get(key) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def peak_final(rows, layer, label, key, smooth) -> tuple[float, float]:
    _, bits = curve(rows, layer, label, key)
    mean = running_mean(bits, smooth)
    return max(mean), mean[-1]


def _pm(values: list[float], digits: int = 2) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def table(runs: dict[str, list[str]], layers: list[str], smooth: int) -> str:
    head = ("| family | layer | coarse peak | coarse final | fine peak | fine final | fine beyond coarse: peak "
            "| final | drop from peak |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for family, dirs in runs.items():
        logs = [load_run(d)[1] for d in dirs]
        for layer in layers:
            stats = {what: [peak_final(rows, layer, *what, smooth) for rows in logs]
                     for what in (("coarse", "bits"), ("fine", "bits"), ("fine", "beyond_bits"))}
            beyond = stats["fine", "beyond_bits"]
            drops = [100 * (p - f) / p for p, f in beyond if p >= MIN_PEAK]
            cells = [_pm([p for p, _ in stats[w]]) + " | " + _pm([f for _, f in stats[w]]) for w in stats]
            lines.append(f"| {family} | {layer} | " + " | ".join(cells) + f" | {_pm(drops, 0) if drops else '-'}% |")
    return "\n".join(lines)


def by_step(rows: list[dict], layer: str, label: str, key: str) -> dict[int, float]:
    return dict(zip(*curve(rows, layer, label, key)))


def paired(runs: dict[str, list[str]], layers: list[str], smooth: int) -> str:
    """Per seed and layer, linear minus MLP over the steps both measured (unsmoothed, converged
    rows only): fine beyond coarse on average and at its largest, and coarse at the end (running
    mean of --smooth); then the drop of fine beyond coarse from its peak, per seed and family."""
    seeds = {os.path.basename(d).partition("_s")[2]: {} for dirs in runs.values() for d in dirs}
    for family, dirs in runs.items():
        for d in dirs:
            seeds[os.path.basename(d).partition("_s")[2]][family] = load_run(d)[1]
    out = ["| seed | layer | beyond coarse, linear - mlp: mean | largest | coarse final: linear | mlp "
           "| drop: linear | mlp |", "|---" * 8 + "|"]
    for seed, logs in sorted(seeds.items()):
        if set(logs) != set(FAMILIES):
            continue
        for layer in layers:
            lin, mlp = (by_step(logs[f], layer, "fine", "beyond_bits") for f in FAMILIES)
            diffs = [lin[t] - mlp[t] for t in lin.keys() & mlp.keys()]
            coarse = [peak_final(logs[f], layer, "coarse", "bits", smooth)[1] for f in FAMILIES]
            drops = []
            for f in FAMILIES:
                peak, final = peak_final(logs[f], layer, "fine", "beyond_bits", smooth)
                drops.append(f"{100 * (peak - final) / peak:.0f}%" if peak >= MIN_PEAK else "-")
            out.append(f"| {seed} | {layer} | {statistics.mean(diffs):+.3f} | {max(diffs, key=abs):+.3f} | "
                       f"{coarse[0]:.2f} | {coarse[1]:.2f} | {drops[0]} | {drops[1]} |")
    return "\n".join(out)


def unconverged(runs: dict[str, list[str]]) -> str:
    out = []
    for family, dirs in runs.items():
        rows = [r for d in dirs for r in load_run(d)[1] if r.get("bits") is not None]
        bad = sum(r["status"] == "not_converged" for r in rows)
        out.append(f"{family}: {bad} of {len(rows)} rows with a number hold a chosen probe that did not converge "
                   "(left out of the table and figure)")
    return "\n".join(out)


def figure(runs: dict[str, list[str]], layers: list[str], smooth: int, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(layers), figsize=(3.2 * len(layers), 5.6), sharex=True)
    for family, dirs in runs.items():
        for i, d in enumerate(dirs):
            rows = load_run(d)[1]
            for col, layer in enumerate(layers):
                for row, (label, key, name) in enumerate((("fine", "beyond_bits", "fine beyond coarse"),
                                                          ("coarse", "bits", "coarse"))):
                    steps, bits = curve(rows, layer, label, key)
                    axes[row, col].plot(steps, running_mean(bits, smooth), color=COLOURS[family], lw=1.2,
                                        alpha=0.85, label=family if (i == 0 and col == 0) else None)
                    axes[row, col].set_title(f"{layer}: {name}", fontsize=9)
    for ax in axes[1]:
        ax.set_xlabel("training step")
    for ax in axes[:, 0]:
        ax.set_ylabel("bits")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"digit set, default run, linear and one-hidden-layer probes (running mean of {smooth})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print("figure ->", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="the directory examples/probe_families.sh wrote")
    ap.add_argument("--layers", default="layer1,layer2,layer3,layer4", help="comma-separated (default: all four)")
    ap.add_argument("--smooth", type=int, default=3, help="running mean over this many measurements (default: 3)")
    ap.add_argument("--figure", default=None, help="write the figure here (default: <root>/probe_families.png)")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds to read (default: every finished run; leave out a seed whose "
                         "network never learned)")
    args = ap.parse_args()
    runs = runs_by_family(args.root, set(args.seeds.split(",")) if args.seeds else None)
    if not runs:
        raise SystemExit(f"no finished runs named linear_s<seed> or mlp_s<seed> under {args.root}")
    layers = args.layers.split(",")
    print("seeds: " + "; ".join(f"{f}: {len(d)}" for f, d in runs.items()))
    print(table(runs, layers, args.smooth))
    print(unconverged(runs))
    print(paired(runs, layers, args.smooth))
    figure(runs, layers, args.smooth, args.figure or os.path.join(args.root, "probe_families.png"))


if __name__ == "__main__":
    main()
