"""Figures of usable information against training time, from run directories' logs."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

from ..engine.params import Integer, check_param
from ..tracking.log import measured, read_log


def _series(rows, layer, label_set, x):
    pts = sorted((r[x] if r[x] is not None else r["step"], r["bits"], r["ci_low"], r["ci_high"], r["entropy_bits"])
                 for r in rows if r["feature_set"] == layer and r["label_set"] == label_set and measured(r))
    return [list(v) for v in zip(*pts)] if pts else None


def _beyond(rows, layer, label_set, x):
    """(xs, bits beyond the reference, the reference's name) of a label set's rows, or None (logs
    written before rows carried ``beyond_bits`` have none)."""
    pts = sorted((r[x] if r[x] is not None else r["step"], r["beyond_bits"], r["beyond_of"]) for r in rows
                 if r["feature_set"] == layer and r["label_set"] == label_set and r.get("beyond_bits") is not None
                 and measured(r))
    return ([p[0] for p in pts], [p[1] for p in pts], pts[0][2]) if pts else None


# A curve of more points than this (a run measured at every step, say) is drawn faint as measured
# with its running mean over DENSE_SHARE of its points on top: bootstrap noise from one step to
# the next would otherwise hide its course.
DENSE_POINTS = 150
DENSE_SHARE = 0.02


def running_mean(values: Sequence[float], k: int) -> list[float]:
    """Mean over each value's window of ``k`` measurements centred on it (cut at the ends)."""
    check_param("smooth", k, Integer(1))
    lo, hi = (k - 1) // 2, k // 2
    windows = (values[max(0, i - lo):i + hi + 1] for i in range(len(values)))
    return [sum(w) / len(w) for w in windows]


def _dense_window(n: int) -> int:
    return 1 if n <= DENSE_POINTS else 2 * int(n * DENSE_SHARE / 2) + 1


def _line(ax, xs, ys, style, colour, lw, label, alpha=1.0) -> None:
    """A curve; a dense one faint as measured, its running mean on top (named in the label)."""
    w = _dense_window(len(xs))
    if w == 1:
        ax.plot(xs, ys, style, color=colour, lw=lw, label=label, alpha=alpha)
        return
    ax.plot(xs, ys, "-", color=colour, lw=0.5, alpha=0.3 * alpha)
    ax.plot(xs, running_mean(ys, w), style, color=colour, lw=lw, alpha=alpha,
            label=f"{label}, running mean of {w}")


def _curves(ax, runs, names, layer, lab, x, colour) -> None:
    """One label set's curves in a layer's panel: a line style per run, the bootstrap band and the
    information beyond the label's reference (dashed grey) for a single run, each run's H(Y) dotted."""
    styles = ["-", "--", ":", "-."]
    for k, rows in enumerate(runs):
        s = _series(rows, layer, lab, x)
        if s is None:
            continue
        xs, bits, lo, hi, ent = s
        tag = lab if len(runs) == 1 else f"{lab}, {names[k]}"
        _line(ax, xs, bits, styles[k % len(styles)], colour, 1.5, tag, 1.0 if len(runs) < 5 else 0.7)
        if len(runs) == 1 and all(v is not None for v in lo + hi):
            w = _dense_window(len(xs))
            ax.fill_between(xs, running_mean(lo, w), running_mean(hi, w), color=colour, alpha=0.2, lw=0,
                            label=f"{lab}: 95% interval")
        ax.axhline(ent[-1], color=colour, ls=(0, (1, 3)), lw=1)  # each run's own H(Y)
        extra = _beyond(rows, layer, lab, x) if len(runs) == 1 else None
        if extra is not None:
            _line(ax, extra[0], extra[1], "--", "0.25", 1.2, f"{lab} beyond {extra[2]} ({lab} bits - {extra[2]} bits)")


def plot_runs(run_dirs: Sequence[str], out_path: str, *, x: str = "step", labels: Sequence[str] | None = None,
              title: str | None = None, log_x: bool = False) -> str:
    """Writes :func:`runs_figure` of ``run_dirs`` to ``out_path``; returns it."""
    import matplotlib.pyplot as plt

    fig = runs_figure(run_dirs, x=x, labels=labels, title=title, log_x=log_x)
    parent = os.path.dirname(out_path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def runs_figure(run_dirs: Sequence[str], *, x: str = "step", labels: Sequence[str] | None = None,
                title: str | None = None, log_x: bool = False):
    """One panel per layer: usable information (bits) of every label set against ``x`` ("step"
    or "epoch"), one line style per run, each run's H(Y) dotted, the learning rate's drops
    dashed grey; for one run also the 95% bootstrap band and a refining label's information
    beyond its reference (fine beyond coarse) dashed. ``log_x`` stretches the early, densely
    measured part (symlog axis). The legend sits under the panels, off the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in ("step", "epoch"):
        raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
    if not run_dirs:
        raise ValueError("plot_runs needs at least one run directory")
    runs = [_run_rows(d) for d in run_dirs]
    names = list(labels) if labels is not None else [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    layers = list(dict.fromkeys(r["feature_set"] for rows in runs for r in rows))
    label_sets = list(dict.fromkeys(r["label_set"] for rows in runs for r in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.6), squeeze=False, sharey=True)
    drops = [_lr_drops(d, x) for d in run_dirs]
    for i, layer in enumerate(layers):
        ax = axes[0, i]
        for j, lab in enumerate(label_sets):
            _curves(ax, runs, names, layer, lab, x, colours[j % len(colours)])
        for k, at in enumerate(drops):
            for n, v in enumerate(at):
                ax.axvline(v, color="0.6", lw=0.8, ls=(0, (4, 2)), label="learning rate x0.1" if k == n == 0 else None)
        ax.set_title(layer)
        ax.set_xlabel(x)
        if log_x:
            ax.set_xscale("symlog", linthresh=1.0 if x == "step" else 0.01)
        if i == 0:
            ax.set_ylabel("usable information (bits)")
    # The legend of the first panel that has one: a layer with no measurement (constant features)
    # draws no line.
    handles, texts = next((h for h in (ax.get_legend_handles_labels() for ax in axes.flat) if h[1]), ([], []))
    if texts:
        fig.legend(handles, texts, loc="lower center", ncol=min(4, len(texts)), fontsize=7, frameon=False)
    fig.suptitle(title or f"Usable information during training: {', '.join(names)} (dotted: H(Y))", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(texts) - 1) // 4), 1, 1))
    return fig


def _run_rows(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} has no log.jsonl; is it a uinfo-fast run directory?")
    rows = read_log(path)
    if not rows:
        raise ValueError(f"{path} holds no measurements yet")
    return rows


def _lr_drops(run_dir: str, x: str) -> list[float]:
    """Where the run's learning rate drops, on the ``x`` axis (its summary says; none before it
    is written, or for a schedule without drops)."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return json.load(fh).get("lr_drops", {}).get(x, [])


def _sweep_panels(summary: dict) -> list[tuple[str, str, str]]:
    """(label set, row key, title) of each sweep panel: the irrelevant label, its information
    beyond the task label when the runs logged it, and the task label."""
    irr, task, layer = summary["irrelevant_label"], summary["task_label"], summary["layer"]
    panels = [(irr, "bits", f"{irr} (irrelevant), {layer}")]
    if all("beyond_peak_bits" in c for c in summary["cells"] if c.get("diverged", 0) < c["seeds"]):
        panels.append((irr, "beyond_bits", f"{irr} beyond {task}, {layer}"))
    return panels + [(task, "bits", f"{task} (task), {layer}")]


def _seed_curves(dirs, layer: str, label_set: str, key: str) -> tuple[list, list]:
    """(epochs, values per epoch over the seeds) of one grid cell, cut to its shortest run."""
    curves = []
    for d in dirs:
        rows = read_log(os.path.join(d, "log.jsonl"))
        curves.append(sorted((r["epoch"], r[key]) for r in rows if r["feature_set"] == layer
                             and r["label_set"] == label_set and r.get(key) is not None))
    n = min(len(c) for c in curves)
    return [curves[0][i][0] for i in range(n)], [[c[i][1] for c in curves] for i in range(n)]


def cell_label(cell: tuple) -> str:
    """"lr 0.1, batch 32[, wd 0.002]" of a sweep cell's key."""
    wd = f", wd {cell[2]:g}" if len(cell) > 2 and cell[2] is not None else ""
    return f"lr {cell[0]:g}, batch {cell[1]}{wd}"


def plot_sweep(summary: dict, cells: dict, out_path: str) -> str:
    """Sweep figure at the summary's layer: the irrelevant label, its information beyond the task
    label (when logged) and the task label, one line per (lr, batch) cell, mean over seeds with a
    min-max band, against epochs; the shuffled-label floor (when the runs had the control) as a
    grey band around 0 in the beyond panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _sweep_panels(summary)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", "-.", ":"]  # so that cells whose curves coincide still show
    for ci, (cell, dirs) in enumerate(cells.items()):
        colour = colours[ci % len(colours)]
        dirs = [d for d in dirs if not os.path.exists(os.path.join(d, "diverged.json"))]
        for ax, (lab, key, _) in zip(axes[0], panels if dirs else []):
            xs, ys = _seed_curves(dirs, summary["layer"], lab, key)
            ax.plot(xs, [sum(v) / len(v) for v in ys], styles[ci % len(styles)], color=colour, lw=1.5,
                    label=f"{cell_label(cell)} ({len(dirs)} seed{'s' if len(dirs) > 1 else ''})")
            if len(dirs) > 1:
                ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys], color=colour, alpha=0.18, lw=0)
    floors = [c["floor_bits"] for c in summary["cells"] if c.get("floor_bits") is not None]
    for ax, (_, key, title) in zip(axes[0], panels):
        if key == "beyond_bits" and floors:
            ax.axhspan(-max(floors), max(floors), color="0.5", alpha=0.25, lw=0, label="shuffled-label floor")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("usable information (bits)")
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, 0.0), max(high, low + 0.1))  # read against 0, noise not magnified
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_perturbation(summary: dict, out_path: str) -> str:
    """Bars: usable information kept at the end, baseline against perturbed early training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = summary["final"]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(entries)), 3.4))
    for j, kind in enumerate(("baseline", "perturbed")):
        xs = [i + (j - 0.5) * 0.38 for i in range(len(entries))]
        ax.bar(xs, [_or_nan(e[kind]["mean"]) for e in entries], 0.38, yerr=[_or_nan(e[kind]["sd"]) for e in entries],
               capsize=3, label=kind)
    ax.set_xticks(range(len(entries)), [f"{e['layer']}\n{e['label_set']}" for e in entries], fontsize=7)
    ax.set_ylabel("usable information at the end (bits)")
    p = summary["perturbation"]
    what = ", ".join(f"{k.replace('early_', '')} {v:g}" for k, v in p.items() if v is not None and k != "early_steps")
    ax.set_title(f"Perturbed early training ({what} for {p['early_steps']} steps), mean ± sd", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def _or_nan(v):
    """A bar's value, NaN (no bar) where the value is missing."""
    return float("nan") if v is None else v
