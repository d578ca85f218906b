"""The paper's experiments on top of the training run: learning-rate x batch-size sweeps and
perturbed early training (Kleinman et al., ICLR 2021; docs/DESIGN.md, section 2).

A sweep is a grid of runs, one directory each (``lr<lr>_bs<batch>_s<seed>``, with ``_wd<weight
decay>`` before the seed when the grid sets the weight decay: :func:`grid_cells`); a run whose
``summary.json`` exists is finished and is not run again, a run with a config but no summary
is resumed from its checkpoint. The figure compares, per grid cell (mean over seeds, min-max
band), the usable information about the irrelevant label (fine classes; checkerboard colour)
with the task label's beside it, against epochs (batch sizes differ, so steps do not compare).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

from ..engine.params import Integer, check_param
from ..tasks.probes import SHUFFLED
from ..tasks.registry import get_task
from ..tracking.log import atomic_write_json, measured
from .config import RunConfig
from .plots import running_mean
from .run import load_run, run_experiment

# A sweep's record of a run that diverged: the cell is reported as such and not run again.
DIVERGED = "diverged.json"


def _mean_sd(vals: Sequence[float]) -> dict:
    """Mean and sample standard deviation (None for a single value: there is no spread)."""
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return {"mean": mean, "sd": sd}


def _pm(d: dict, digits: int, scale: float = 1.0, unit: str = "") -> str:
    """``mean ± sd`` (the mean alone when there is no spread, from a single seed)."""
    mean = f"{scale * d['mean']:.{digits}f}{unit}"
    return mean if d["sd"] is None else f"{mean} ± {scale * d['sd']:.{digits}f}"


def run_name(lr: float, batch_size: int, seed: int, weight_decay: float | None = None) -> str:
    """``lr<lr>_bs<batch>[_wd<weight decay>]_s<seed>``: the weight decay is named when the sweep
    sets it per cell."""
    wd = "" if weight_decay is None else f"_wd{weight_decay:g}"
    return f"lr{lr:g}_bs{batch_size}{wd}_s{seed}"


def _rounded(x: float) -> float:
    """A derived learning rate or weight decay without the float noise of its arithmetic (0.4, not
    0.4000000000000001), so that run names and configs read as the grid was meant."""
    return float(f"{x:.6g}")


def grid_cells(base: RunConfig, lrs: Sequence[float] | None, batch_sizes: Sequence[int], *,
               weight_decays: Sequence[float] | None = None, wd_scale_with_lr: bool = False,
               lr_scale_with_batch: bool = False) -> list[tuple[float, int, float]]:
    """The sweep's (lr, batch size, weight decay) cells: the product of ``lrs``, ``batch_sizes``
    and ``weight_decays`` (default: the base's weight decay), or with one factor tied to another.

    ``lr_scale_with_batch``: each batch size's learning rate keeps lr / batch, the scale of SGD's
    noise, at the base's value (``lrs`` must be None). ``wd_scale_with_lr``: each learning rate's
    weight decay keeps lr x weight decay, the weights' shrinkage per step, at the base's value
    (``weight_decays`` must be None). Together they hold both while the batch size moves."""
    if not batch_sizes:
        raise ValueError("batch_sizes: a sweep needs at least one batch size")
    if lr_scale_with_batch == (lrs is not None):
        raise ValueError("lrs: give learning rates, or lr_scale_with_batch=True to derive them, not both")
    if lrs is not None and not lrs:
        raise ValueError("lrs: a sweep needs at least one learning rate")
    if wd_scale_with_lr and weight_decays is not None:
        raise ValueError("weight_decays: give weight decays or wd_scale_with_lr=True, not both")
    if wd_scale_with_lr and base.weight_decay == 0:
        raise ValueError("wd_scale_with_lr holds lr x weight_decay at the base's, which is 0; set --weight-decay")
    cells = []
    for bs in batch_sizes:
        for lr in ([base.lr * bs / base.batch_size] if lr_scale_with_batch else lrs):
            wds = [base.lr * base.weight_decay / lr] if wd_scale_with_lr else (weight_decays or [base.weight_decay])
            cells += [(_rounded(lr), int(bs), _rounded(wd)) for wd in wds]
    return sorted(set(cells), key=cells.index)


def ended(run_dir: str) -> bool:
    """Whether a sweep's run directory holds a run that ended: with its summary, or diverged."""
    return any(os.path.exists(os.path.join(run_dir, f)) for f in ("summary.json", DIVERGED))


def _finished(run_dir: str, cfg: RunConfig) -> bool:
    """True for a run with a summary, or one that diverged, of this config."""
    if not ended(run_dir):
        return False
    saved, _ = load_run(run_dir)
    if not saved.same_run(cfg):
        raise ValueError(f"{run_dir} holds a finished run with another config; remove it or use another --out")
    return True


def curve_stats(rows: Sequence[dict], layer: str, label_set: str, key: str = "bits", smooth: int = 1) -> dict:
    """Peak, final value, and the drop from peak to end (share of the peak) of one curve: of the
    rows' ``key`` ("bits", or "beyond_bits": the label's information beyond its reference), after a
    running mean over ``smooth`` measurements (1: as measured). A peak over single noisy
    measurements is high by the noise, and so is a drop from it; smoothing lowers both."""
    pts = sorted((r["step"], r[key], r["epoch"], r["entropy_bits"]) for r in rows
                 if r["feature_set"] == layer and r["label_set"] == label_set and r.get(key) is not None and measured(r))
    if not pts:
        raise ValueError(f"no rows for layer {layer!r}, label set {label_set!r}")
    bits = running_mean([p[1] for p in pts], smooth)
    peak_i = max(range(len(bits)), key=bits.__getitem__)
    peak, final = bits[peak_i], bits[-1]
    return {"peak_bits": peak, "peak_epoch": pts[peak_i][2], "final_bits": final,
            "drop_from_peak": (peak - final) / peak if peak > 0 else float("nan"),
            "entropy_bits": pts[-1][3], "final_share_of_entropy": final / pts[-1][3]}


def noise_floor(rows: Sequence[dict], layer: str) -> float | None:
    """The largest |usable information| about the shuffled label (``shuffled_control``) at
    ``layer`` over the run: the size of a difference that means nothing. None without the control."""
    bits = [abs(r["bits"]) for r in rows if r["feature_set"] == layer and r["label_set"] == SHUFFLED and measured(r)]
    return max(bits) if bits else None


def cell_schedule(base: RunConfig, batch_size: int) -> dict:
    """The batch size of a grid cell, with the measurement schedule scaled by ``base.batch_size /
    batch_size`` so that every cell measures after the same numbers of examples: a peak taken over
    more measurements would be the larger by noise alone, and inflate a cell's drop from it."""
    def scaled(steps: int) -> int:
        return max(1, round(steps * base.batch_size / batch_size)) if steps > 0 else 0

    return {"batch_size": batch_size, "track_every": scaled(base.schedule.every),
            "early_until": scaled(base.schedule.early_until)}


def run_sweep(base: RunConfig, out_dir: str, lrs: Sequence[float] | None, batch_sizes: Sequence[int],
              seeds: Sequence[int], *, weight_decays: Sequence[float] | None = None, wd_scale_with_lr: bool = False,
              lr_scale_with_batch: bool = False, layer: str | None = None, progress: bool = True, log=print,
              scale_schedule: bool = True, smooth: int = 1) -> dict:
    """Runs (or skips, or resumes) every cell of :func:`grid_cells` for every seed, then writes
    sweep.json and sweep.png. A run that diverges is recorded (``diverged.json``) and the sweep
    goes on. ``scale_schedule``: each cell's measurement schedule scaled to its batch size
    (:func:`cell_schedule`); False: every cell measures at ``base``'s steps. ``smooth``: the
    tables' peaks and finals from a running mean over this many measurements."""
    check_param("smooth", smooth, Integer(1))
    if not seeds:
        raise ValueError("seeds: a sweep needs at least one seed")
    grid = grid_cells(base, lrs, batch_sizes, weight_decays=weight_decays, wd_scale_with_lr=wd_scale_with_lr,
                      lr_scale_with_batch=lr_scale_with_batch)
    named_wd = weight_decays is not None or wd_scale_with_lr
    os.makedirs(out_dir, exist_ok=True)
    cells = {}
    for lr, bs, wd in grid:
        for seed in seeds:
            cell = cell_schedule(base, bs) if scale_schedule else {"batch_size": bs}
            cfg = base.replace(**cell, lr=lr, weight_decay=wd, seed=int(seed))
            run_dir = os.path.join(out_dir, run_name(lr, bs, seed, wd if named_wd else None))
            _run_or_skip(cfg, run_dir, progress, log)
            cells.setdefault((lr, bs, wd), []).append(run_dir)
    summary = summarise(base.task, cells, layer, smooth)
    atomic_write_json(os.path.join(out_dir, "sweep.json"), summary)
    from .plots import plot_sweep

    plot_sweep(summary, cells, os.path.join(out_dir, "sweep.png"))
    return summary


def _seed_stats(run_dir: str, layer: str | None, task_label: str, irrelevant: str, smooth: int) -> dict:
    """One run's curve statistics at ``layer`` (default: its last tracked), its floor, and the
    steps, training loss and test accuracy its summary.json records (None where it has none); a
    run that diverged gives its error instead."""
    diverged = os.path.join(run_dir, DIVERGED)
    if os.path.exists(diverged):
        return {"run": run_dir, "diverged": json.load(open(diverged))["error"]}
    _, rows = load_run(run_dir)
    lay = layer or rows[-1]["feature_set"]
    beyond = any(r.get("beyond_bits") is not None for r in rows if r["label_set"] == irrelevant)
    path = os.path.join(run_dir, "summary.json")
    done = json.load(open(path)) if os.path.exists(path) else {}
    return {"run": run_dir, "layer": lay, "task": curve_stats(rows, lay, task_label, smooth=smooth),
            "irrelevant": curve_stats(rows, lay, irrelevant, smooth=smooth), "floor_bits": noise_floor(rows, lay),
            "steps": done.get("steps"), "train_loss": done.get("train_loss"),
            "test_accuracy": done.get("test_accuracy"),
            **({"beyond": curve_stats(rows, lay, irrelevant, "beyond_bits", smooth)} if beyond else {})}


def _cell_stats(per_seed: list[dict]) -> dict:
    """Mean and sd over the seeds that did not diverge, of every statistic all of them have."""
    agg = {}
    for which in ("task", "irrelevant", "beyond"):
        if not per_seed or not all(which in s for s in per_seed):
            continue
        for key in ("peak_bits", "final_bits", "drop_from_peak", "final_share_of_entropy"):
            agg[f"{which}_{key}"] = _mean_sd([s[which][key] for s in per_seed])
    for key in ("train_loss", "test_accuracy"):
        if per_seed and all(s[key] is not None for s in per_seed):
            agg[key] = _mean_sd([s[key] for s in per_seed])
    floors = [s["floor_bits"] for s in per_seed if s["floor_bits"] is not None]
    agg["floor_bits"] = max(floors) if floors else None
    steps = {s["steps"] for s in per_seed if s["steps"] is not None}
    agg["steps"] = steps.pop() if len(steps) == 1 else None
    return agg


def summarise(task: str, cells: dict, layer: str | None = None, smooth: int = 1) -> dict:
    """Per grid cell ((lr, batch) or (lr, batch, weight decay)) and seed: curve statistics
    (:func:`curve_stats`, over ``smooth`` measurements) of the task and the irrelevant label at
    ``layer`` (default: the last layer tracked), plus their mean and standard deviation over the
    seeds that did not diverge; ``diverged``: how many did."""
    task_label, irrelevant = get_task(task).task_label, get_task(task).irrelevant_label
    out = {"task": task, "task_label": task_label, "irrelevant_label": irrelevant, "smooth": smooth, "cells": []}
    for key, dirs in cells.items():
        per_seed = [_seed_stats(d, layer, task_label, irrelevant, smooth) for d in dirs]
        ran = [s for s in per_seed if "diverged" not in s]
        if ran:
            out.setdefault("layer", ran[0]["layer"])
        wd = key[2] if len(key) > 2 else None
        out["cells"].append({"lr": key[0], "batch_size": key[1], "weight_decay": wd, "seeds": len(dirs),
                             "diverged": len(per_seed) - len(ran), "runs": per_seed, **_cell_stats(ran)})
    out.setdefault("layer", layer)
    return out


def _bits(d: dict) -> str:
    return _pm(d, 2)


def _share(d: dict) -> str:
    if math.isnan(d["mean"]):  # a drop from a peak at or below 0 bits
        return "-"
    return _pm(d, 0, 100.0, "%")


def _columns(summary: dict) -> list[tuple[str, object]]:
    """(header, cell -> text) of every column a sweep's table shows after the cell and its seeds:
    the irrelevant label, its information beyond the task label (when the logs have it), the task
    label, and the shuffled-label floor (when the runs had the control)."""
    irr, task = summary["irrelevant_label"], summary["task_label"]
    ran = [c for c in summary["cells"] if c["diverged"] < c["seeds"]]
    cols = [(f"{irr}: peak (bits)", lambda c: _bits(c["irrelevant_peak_bits"])),
            (f"{irr}: final (bits)", lambda c: _bits(c["irrelevant_final_bits"])),
            (f"{irr}: drop from peak", lambda c: _share(c["irrelevant_drop_from_peak"]))]
    if all("beyond_peak_bits" in c for c in ran):
        cols += [(f"{irr} beyond {task}: peak (bits)", lambda c: _bits(c["beyond_peak_bits"])),
                 (f"{irr} beyond {task}: final (bits)", lambda c: _bits(c["beyond_final_bits"])),
                 (f"{irr} beyond {task}: drop from peak", lambda c: _share(c["beyond_drop_from_peak"]))]
    cols += [(f"{task}: final (bits)", lambda c: _bits(c["task_final_bits"])),
             (f"{task}: final / H", lambda c: _share(c["task_final_share_of_entropy"])),
             (f"{task}: drop from peak", lambda c: _share(c["task_drop_from_peak"]))]
    if all("train_loss" in c for c in ran):
        cols += [("training loss (nats)", lambda c: _pm(c["train_loss"], 3)),
                 (f"{task} test accuracy", lambda c: _pm(c["test_accuracy"], 3))]
    if any(c.get("floor_bits") is not None for c in ran):
        cols.append(("floor (bits)", lambda c: "-" if c["floor_bits"] is None else f"{c['floor_bits']:.3f}"))
    return cols


def _head(c: dict) -> str:
    """A row's first columns: the cell, its steps and its seeds (and how many diverged)."""
    wd = "-" if c.get("weight_decay") is None else f"{c['weight_decay']:g}"
    steps = "-" if c.get("steps") is None else str(c["steps"])
    seeds = str(c["seeds"]) + (f" ({c['diverged']} diverged)" if c.get("diverged") else "")
    return f"| {c['lr']:g} | {c['batch_size']} | {wd} | {steps} | {seeds} | "


def format_summary(summary: dict) -> str:
    """A Markdown table of a sweep summary (mean ± sd over the seeds that did not diverge)."""
    cols = _columns(summary)
    floor = cols[-1][0] == "floor (bits)"
    smooth = summary.get("smooth", 1)
    lines = [f"layer {summary['layer']}; mean ± sd over seeds" + (
        f"; peaks and finals of a running mean over {smooth} measurements" if smooth > 1 else "") + ("; floor: the largest |bits| about the shuffled "
                                                                 "label in any seed" if floor else ""),
             "| lr | batch | weight decay | steps | seeds | " + " | ".join(h for h, _ in cols) + " |",
             "|---" * (5 + len(cols)) + "|"]
    for c in summary["cells"]:
        ran = c["diverged"] < c["seeds"]
        lines.append(_head(c) + " | ".join(f(c) if ran else "diverged" for _, f in cols) + " |")
    return "\n".join(lines)


def _run_or_skip(cfg: RunConfig, run_dir: str, progress: bool, log) -> None:
    name = os.path.basename(run_dir)
    if _finished(run_dir, cfg):
        log(f"{name}: finished, skipped")
        return
    resume = os.path.exists(os.path.join(run_dir, "config.json"))
    log(f"{name}: {'resuming' if resume else 'running'}")
    try:
        run_experiment(cfg, run_dir, resume=resume, progress=progress)
    except FloatingPointError as e:  # one cell's verdict; the grid goes on
        log(f"{name}: {e}")
        atomic_write_json(os.path.join(run_dir, DIVERGED), {"error": str(e)})


def final_values(rows: Sequence[dict]) -> dict[tuple[str, str], float | None]:
    """Usable information per (layer, label set) at the run's last step; None where that row
    holds no measurement (a dead layer, a probe that did not converge)."""
    last = max(r["step"] for r in rows)
    return {(r["feature_set"], r["label_set"]): r["bits"] if measured(r) else None for r in rows if r["step"] == last}


def _final_entry(key: tuple[str, str], finals: dict, seeds: Sequence[int]) -> dict:
    """A (layer, label set)'s finals over the seeds, baseline and perturbed; seeds whose run has
    no measurement of it are named as missing, not averaged."""
    entry = {"layer": key[0], "label_set": key[1]}
    for kind, per_seed in finals.items():
        vals = [f.get(key) for f in per_seed]
        have = [v for v in vals if v is not None]
        stats = _mean_sd(have) if have else {"mean": None, "sd": None}
        entry[kind] = {**stats, "values": vals, "missing_seeds": [s for s, v in zip(seeds, vals) if v is None]}
    return entry


def run_perturbation(base: RunConfig, out_dir: str, seeds: Sequence[int], *, progress: bool = True, log=print) -> dict:
    """Baseline (``base`` without its early_* perturbation) and perturbed runs (``base``) for every
    seed; compares the usable information kept at the end of training, per (layer, label set)."""
    if base.early_steps <= 0 or (base.early_lr is None and base.early_batch_size is None):
        raise ValueError("a perturbation needs early_steps > 0 and early_lr and/or early_batch_size")
    plain = base.replace(early_steps=0, early_lr=None, early_batch_size=None)
    finals = {"baseline": [], "perturbed": []}
    for seed in seeds:
        for kind, cfg in (("baseline", plain), ("perturbed", base)):
            cfg = cfg.replace(seed=int(seed))
            run_dir = os.path.join(out_dir, f"{kind}_s{seed}")
            _run_or_skip(cfg, run_dir, progress, log)
            finals[kind].append(final_values(load_run(run_dir)[1]))
    keys = list(dict.fromkeys(k for per_seed in finals.values() for f in per_seed for k in f))
    table = [_final_entry(key, finals, seeds) for key in keys]
    summary = {"perturbation": {"early_steps": base.early_steps, "early_lr": base.early_lr,
                                "early_batch_size": base.early_batch_size},
               "seeds": list(seeds), "final": table}
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "perturbation.json"), summary)
    from .plots import plot_perturbation

    plot_perturbation(summary, os.path.join(out_dir, "perturbation.png"))
    return summary


def format_perturbation(summary: dict) -> str:
    p = summary["perturbation"]
    what = ", ".join(f"{k.replace('early_', '')} {v:g}" for k, v in p.items() if v is not None and k != "early_steps")
    lines = [f"usable information at the end of training (bits, mean ± sd over {len(summary['seeds'])} seeds); "
             f"perturbation: {what} for the first {p['early_steps']} steps",
             "| layer | label set | baseline | perturbed | difference |", "|---|---|---|---|---|"]
    for e in summary["final"]:
        b, q = e["baseline"], e["perturbed"]
        diff = "-" if b["mean"] is None or q["mean"] is None else f"{q['mean'] - b['mean']:+.3f}"
        lines.append(f"| {e['layer']} | {e['label_set']} | {_cell(b)} | {_cell(q)} | {diff} |")
    return "\n".join(lines)


def _cell(stats: dict) -> str:
    value = "missing" if stats["mean"] is None else _pm(stats, 3)
    missing = stats.get("missing_seeds") or []
    return value + (f" (no measurement in seeds {', '.join(map(str, missing))})" if missing else "")
