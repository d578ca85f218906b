"""Tables and figure of the decay-against-noise sweep (docs/RESULTS.md, "What makes a network
discard"), made from the run directories that examples/decay_vs_noise.sh writes.

    python examples/decay_vs_noise.py runs/decay_noise_digits --layers layer3,layer4 \
        --figure docs/figures/decay_noise_digits.png
    python examples/decay_vs_noise.py runs/decay_noise_digits --not-learned   # cells to run longer

Every run directory under the given directories is a seed of its cell (lr, batch, weight decay,
steps). Per cell and layer the table gives the irrelevant label's information beyond the task
label (the digit set: fine beyond coarse) or, where the runs did not log one, the irrelevant label
itself (the checkerboard: colour): peak, final value and drop of a running mean over --smooth
measurements, mean ± sd over seeds and each seed's drop; the task label's final share of its
entropy, the training loss and the test accuracy. A seed whose test accuracy ends under
--learned is marked: it never learned the task, so it has nothing to keep or discard.
"""
import argparse
import json
import math
import os
from collections import defaultdict

from uinfo_fast.experiments import load_run
from uinfo_fast.experiments.plots import running_mean
from uinfo_fast.experiments.sweeps import DIVERGED, ended, summarise
from uinfo_fast.tasks.registry import get_task


def runs_by_cell(roots: list[str]) -> tuple[str, dict, list[str]]:
    """(task, {(lr, batch, weight decay, steps): finished run directories in seed order}, the run
    directories left out because they have not finished: no summary, not diverged)."""
    cells, tasks, unfinished = defaultdict(list), set(), []
    for root in roots:
        for name in sorted(os.listdir(root)):
            d = os.path.join(root, name)
            if not os.path.exists(os.path.join(d, "config.json")):
                continue
            if not ended(d):
                unfinished.append(d)
                continue
            cfg, _ = load_run(d)
            tasks.add(cfg.task)
            cells[(cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.epochs)].append((cfg.seed, d))
    if not tasks:
        raise SystemExit(f"no finished run under {roots}" + (f"; not finished: {', '.join(unfinished)}"
                                                               if unfinished else ""))
    if len(tasks) != 1:
        raise SystemExit(f"expected the runs of one task under {roots}, found {sorted(tasks)}")
    ordered = sorted(cells.items(), key=lambda kv: (kv[0][1], -kv[0][0], -kv[0][2], kv[0][3]))
    return tasks.pop(), {key: [d for _, d in sorted(runs)] for key, runs in ordered}, unfinished


def _pm(d: dict | None, digits: int, scale: float = 1.0, unit: str = "") -> str:
    if d is None or math.isnan(d["mean"]):
        return "-"
    return f"{scale * d['mean']:.{digits}f}{unit}" + ("" if d["sd"] is None else f" ± {scale * d['sd']:.{digits}f}")


def _learned(run: dict, threshold: float) -> bool:
    return "diverged" not in run and (run["test_accuracy"] or 0.0) >= threshold


def _cell(task: str, key: tuple, dirs: list[str], layer: str, smooth: int, threshold: float):
    """(the cell's statistics over every seed, and over the seeds that learned; None if none did)."""
    every = summarise(task, {key[:3]: dirs}, layer, smooth)["cells"][0]
    kept = [r["run"] for r in every["runs"] if _learned(r, threshold)]
    return every, summarise(task, {key[:3]: kept}, layer, smooth)["cells"][0] if kept else None


def _drop(run: dict, which: str, threshold: float) -> str:
    if "diverged" in run:
        return "div."
    drop = run[which]["drop_from_peak"]
    return ("-" if math.isnan(drop) else f"{100 * drop:.0f}%") + ("" if _learned(run, threshold) else "*")


def table(task: str, cells: dict, layer: str, smooth: int, threshold: float) -> str:
    """The Markdown table of one layer: the information columns over the seeds that learned, the
    per-seed drops, training loss and test accuracy over every seed."""
    t = get_task(task)
    stats = {key: _cell(task, key, dirs, layer, smooth, threshold) for key, dirs in cells.items()}
    ran = [r for every, _ in stats.values() for r in every["runs"] if "diverged" not in r]
    which = "beyond" if ran and "beyond" in ran[0] else "irrelevant"
    what = f"{t.irrelevant_label} beyond {t.task_label}" if which == "beyond" else t.irrelevant_label
    lines = [f"`{layer}`: {what}, running mean over {smooth} measurements; mean ± sd over the seeds that learned",
             f"| lr | batch | weight decay | lr x wd | lr / batch | steps | seeds (learned) | {what}: peak (bits) "
             f"| final (bits) | drop from peak | drop per seed | {t.task_label}: final / H | training loss (nats) "
             f"| {t.task_label} test accuracy |", "|---" * 14 + "|"]
    for (lr, bs, wd, _), (every, learned) in stats.items():
        seeds = f"{every['seeds']} ({len(learned['runs']) if learned else 0})" + (
            f", {every['diverged']} diverged" if every["diverged"] else "")
        c = learned or {}
        info = [_pm(c.get(which + "_peak_bits"), 2), _pm(c.get(which + "_final_bits"), 2),
                _pm(c.get(which + "_drop_from_peak"), 0, 100, "%")] if learned else ["not learned"] * 3
        lines.append(f"| {lr:g} | {bs} | {wd:g} | {lr * wd:.3g} | {lr / bs:.3g} | {every.get('steps') or '-'} "
                     f"| {seeds} | " + " | ".join(info) + " | "
                     + ", ".join(_drop(r, which, threshold) for r in every["runs"])
                     + f" | {_pm(c.get('task_final_share_of_entropy'), 0, 100, '%')} "
                     f"| {_pm(every.get('train_loss'), 3)} | {_pm(every.get('test_accuracy'), 3)} |")
    return "\n".join(lines) + f"\n\n(*: a seed whose {t.task_label} test accuracy ends under {threshold})"


def _curve(rows: list[dict], layer: str, label: str, key: str, smooth: int) -> tuple[list, list]:
    pts = sorted((r["epoch"], r[key]) for r in rows
                 if r["feature_set"] == layer and r["label_set"] == label and r.get(key) is not None)
    return [p[0] for p in pts], running_mean([p[1] for p in pts], smooth)


def figure(task: str, cells: dict, layers: list[str], smooth: int, out: str, per_row: int = 5) -> None:
    """One panel per cell and layer, seeds overlaid: each layer a block of rows, ``per_row``
    cells to a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = get_task(task)
    cols = min(per_row, len(cells))
    block = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(block * len(layers), cols, figsize=(2.6 * cols, 2.3 * block * len(layers) + 0.3),
                             squeeze=False, sharey=True)
    cycle, colours = plt.rcParams["axes.prop_cycle"].by_key()["color"], {}

    def colour(seed: int) -> str:  # the same in every panel
        return colours.setdefault(seed, cycle[len(colours) % len(cycle)])

    lengths = [k[3] for k in cells]
    usual = max(set(lengths), key=lengths.count)  # only a cell run longer names its epochs
    for i, layer in enumerate(layers):
        for j, (key, dirs) in enumerate(cells.items()):
            ax = axes[i * block + j // cols, j % cols]
            _cell_panel(ax, t, key, dirs, layer, smooth, colour, usual)
            if j % cols == 0:
                ax.set_ylabel(f"{layer}: {_what(t, dirs)} (bits)", fontsize=7)
        for j in range(len(cells), block * cols):
            axes[i * block + j // cols, j % cols].axis("off")
    _seed_legend(axes[0, 0], axes.flat)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _seed_legend(ax, axes) -> None:
    """One legend of every seed drawn in any panel, in seed order."""
    lines = {}
    for a in axes:
        for line in a.get_lines():
            if line.get_label().startswith("seed "):
                lines.setdefault(line.get_label(), line)
    labels = sorted(lines, key=lambda name: int(name.split()[1]))
    ax.legend([lines[n] for n in labels], labels, fontsize=6)


def _beyond(rows: list[dict]) -> bool:
    return any(r.get("beyond_bits") is not None for r in rows)


def _what(t, dirs) -> str:
    return f"{t.irrelevant_label} beyond {t.task_label}" if _beyond(load_run(dirs[0])[1]) else t.irrelevant_label


def _cell_panel(ax, t, key, dirs, layer, smooth, colour, usual) -> None:
    lr, bs, wd, epochs = key
    for d in dirs:
        if os.path.exists(os.path.join(d, DIVERGED)):
            continue
        cfg, rows = load_run(d)
        xs, ys = _curve(rows, layer, t.irrelevant_label, "beyond_bits" if _beyond(rows) else "bits", smooth)
        ax.plot(xs, ys, color=colour(cfg.seed), lw=1.2, label=f"seed {cfg.seed}")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_title(f"lr {lr:g}, batch {bs}, wd {wd:g}" + (f", {epochs:g} epochs" if epochs != usual else ""),
                 fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_xlabel("epoch", fontsize=7)


def _summaries(dirs: list[str]) -> list[dict]:
    """The summary.json of every run of ``dirs`` that finished."""
    paths = (os.path.join(d, "summary.json") for d in dirs)
    return [json.load(open(p)) for p in paths if os.path.exists(p)]


def compute_hours(cells: dict) -> float:
    """Wall-clock hours of every run that finished (summary.json's wall_seconds)."""
    return sum(s["wall_seconds"] for dirs in cells.values() for s in _summaries(dirs)) / 3600


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="sweep directories (each run directory in them is a seed of its cell)")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: the task's last)")
    p.add_argument("--smooth", type=int, default=3)
    p.add_argument("--learned", type=float, default=0.9, help="test accuracy a seed must end with to count as learned")
    p.add_argument("--figure", default=None, help="PNG path of the figure (one panel per cell and layer)")
    p.add_argument("--not-learned", action="store_true",
                   help="print 'lr batch weight-decay' of each cell with a seed that did not learn (and fewer steps "
                        "than the grid's longest cell), and stop")
    args = p.parse_args()
    task, cells, unfinished = runs_by_cell(args.dirs)
    if unfinished:
        print(f"left out, not finished (running, or killed before their end): {', '.join(unfinished)}\n")
    if args.not_learned:  # a cell that already had the grid's most steps is not run longer
        steps = {key: {s["steps"] for s in _summaries(dirs)} for key, dirs in cells.items()}
        most = max(max(v) for v in steps.values() if v)
        for key, dirs in cells.items():
            if most in steps[key]:
                continue
            runs = summarise(task, {key[:3]: dirs}, None, args.smooth)["cells"][0]["runs"]
            if not all(_learned(r, args.learned) for r in runs):
                print(f"{key[0]:g} {key[1]} {key[2]:g}")
        return
    first = next(iter(cells.values()))[0]
    layers = args.layers.split(",") if args.layers else [load_run(first)[1][-1]["feature_set"]]
    for layer in layers:
        print(table(task, cells, layer, args.smooth, args.learned) + "\n")
    print(f"compute: {compute_hours(cells):.2f} hours of wall clock over {sum(map(len, cells.values()))} runs")
    if args.figure:
        figure(task, cells, layers, args.smooth, args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
