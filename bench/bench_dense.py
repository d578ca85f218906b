"""Measuring every step: what a measurement costs against a training step, and how far the
amortised measurement (rolling capture, local penalty search) lies from the exact one.

Three parts, each writing one JSON row per run to `bench/rows/dense.jsonl`, tagged with the
machine and the commit (`bench/tables.py dense` makes tables of them):

  cost        on the default run's network and probe inputs (the digit set, seed 0), after
              `--warm-steps` SGD steps: one SGD step (batch 32); plain `torch.inference_mode()`
              forward passes of every probe input, what a capture cannot go below (the floor);
              the tracker's capture of the same inputs; a whole measurement and its phases,
              exact and amortised, `--repeats` times alternated. Prints medians in seconds and
              in training steps, and the overhead of measuring every 1, 10 and 100 steps.
  runs        the one-epoch digit run (`uinfo-fast run --epochs 1 --seed 11`) on the run's own
              clock (`wall_seconds`): untracked, and tracked every 10 and every 1 step, exact and
              amortised, alternated `--pairs` times; prints each tracked run's clock against the
              untracked one's. `--size gpu`: ResNet-18 at CIFAR-100 size on CUDA, asynchronous.
  exactness   one training run of the default digit config with two trackers on the same
              network at the same steps, every `--every` steps: exact (every input captured,
              the whole grid, probes fitted from scratch, or `--reference warm`) and amortised. Prints the largest and
              mean |difference| in bits, the rows farther apart than max(0.02 bits, the exact
              row's 95% half-width), and where fine-beyond-coarse peaks and drops in each.

    python bench/bench_dense.py cost --repeats 5
    python bench/bench_dense.py runs --pairs 2
    python bench/bench_dense.py runs --size gpu --pairs 1 --modes untracked,every10-amortised,every1-amortised
    python bench/bench_dense.py exactness --every 10
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from uinfo_fast.experiments import RunConfig, make_tracker, run_experiment, train_step
from uinfo_fast.tracking import read_log
from uinfo_fast.tracking.capture import eval_mode

from _harness import PINNED, record, training_setup  # noqa: E402  (bench/, the script's folder)

EVERY = (1, 10, 100)
# The amortised measurement: a quarter of the probe inputs captured at each measurement, the
# whole penalty grid searched at every one (README, "Measuring every step": the local search of
# --full-grid-every 10 saved no fit time on the digit run, nor brought the rows nearer to exact:
# bench/RESULTS.md).
AMORTISED = dict(capture_refresh=4, full_grid_every=1)
# The exact reference: every input captured and the whole grid searched at every measurement,
# the probes fitted from scratch ("cold"), or from the last measurement's and polished ("warm":
# within 0.006 bits of cold, bench/bench_warm_cold.py, and far cheaper once the network has learnt).
EXACT = dict(capture_refresh=1, full_grid_every=1)
REFERENCES = {"cold": dict(warm_start=False), "warm": dict(warm_start=True)}
RUN = dict(epochs=1.0, seed=11)  # the one-epoch digit run of the targets
# Where a GPU is lent: ResNet-18 (width 64) on CIFAR-100-sized synthetic images (bench_tracking's
# pinned run), half an epoch, tracked asynchronously.
GPU_RUN = dict(PINNED, device="cuda", n_train=50_000, n_test=10_000, width=64, epochs=0.5, async_tracking=True)
SIZES = {"cpu": RUN, "gpu": GPU_RUN}
HALF_WIDTH_FLOOR = 0.02  # bits: the exactness target's smallest tolerance


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# cost: one measurement against one training step


def step_seconds(task, plan, opt, start: int, count: int) -> list[float]:
    return [timed(lambda s=s: train_step(task, plan, opt, s)) for s in range(start, start + count)]


def floor_pass(tracker) -> None:
    """The forward passes a capture cannot avoid: every probe input, no hooks, nothing kept."""
    model = tracker.capture.model
    splits = [x for x in (tracker.train_inputs, tracker.val_inputs, tracker.test_inputs) if x is not None]
    with eval_mode(model), torch.inference_mode():
        for x in splits:
            for xb in x.split(tracker.capture.options.batch_size):
                model(xb)


def gflop(fn) -> float:
    """The floating-point operations of ``fn()`` (convolutions and matrix products, forward and
    backward, as torch's FlopCounterMode counts them), in billions."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def measure_once(tracker, step: int) -> dict[str, float]:
    """Seconds of one whole measurement and of each of its phases."""
    before = dict(tracker.phase_seconds)
    total = timed(lambda: tracker.measure(step))
    return {"measure": total, **{k: tracker.phase_seconds[k] - before[k] for k in before}}


def cost(args) -> dict:
    cfg = RunConfig(seed=args.seed)
    task, plan, opt = training_setup(cfg)
    task.model.train()
    step_seconds(task, plan, opt, 0, args.warm_steps)
    steps = step_seconds(task, plan, opt, args.warm_steps, args.steps)
    modes = (("exact", {}),) + ((("amortised", AMORTISED),) if not args.exact_only else ())
    trackers = {mode: make_tracker(cfg.replace(**opts), task, log_path=None) for mode, opts in modes}
    floor_pass(trackers["exact"])  # warm-up: allocator, kernels
    for t in trackers.values():  # each tracker's first measurement captures everything, cold
        t.measure(0)
    floors, captures, measures = [], [], {m: [] for m in trackers}
    for r in range(args.repeats):
        floors.append(timed(lambda: floor_pass(trackers["exact"])))
        captures.append(timed(trackers["exact"].capture_features))
        for mode, t in trackers.items():
            measures[mode].append(measure_once(t, 1 + r))
    row = {"part": "cost", "threads": torch.get_num_threads(), "repeats": args.repeats,
           "probe_inputs": sum(trackers["exact"].n_rows.values()), "batch_size": cfg.batch_size,
           "step": statistics.median(steps), "floor": statistics.median(floors),
           "capture": statistics.median(captures),
           "step_gflop": gflop(lambda: train_step(task, plan, opt, args.warm_steps + args.steps)),
           "floor_gflop": gflop(lambda: floor_pass(trackers["exact"]))}
    for mode, ms in measures.items():
        row[mode] = {k: statistics.median(m[k] for m in ms) for k in ms[0]}
    return row


def report_cost(row: dict) -> str:
    step = row["step"]
    lines = [f"default digit run, {row['probe_inputs']} probe inputs, training batch {row['batch_size']}, "
             f"medians of {row['repeats']}, {row['threads']} threads",
             "| what | seconds | training steps |", "|---|---|---|"]
    for key in ("step", "floor", "capture"):
        lines.append(f"| {key} | {row[key]:.4f} | {row[key] / step:.2f} |")
    modes = [m for m in ("exact", "amortised") if m in row]
    for mode in modes:
        for key in ("measure", "capture", "fit", "polish", "score", "log"):
            lines.append(f"| {mode}: {key} | {row[mode][key]:.4f} | {row[mode][key] / step:.2f} |")
    lines.append(f"capture / floor: {row['capture'] / row['floor']:.2f}")
    if "floor_gflop" in row:  # what the CPU does per second in each: the step's small batch runs far below the floor
        lines.append(f"arithmetic: a training step {row['step_gflop']:.2f} GFLOP at "
                     f"{row['step_gflop'] / step:.0f} GFLOP/s; the floor {row['floor_gflop']:.1f} GFLOP at "
                     f"{row['floor_gflop'] / row['floor']:.0f} GFLOP/s")
    for mode in modes:
        lines.append(f"{mode}: overhead of measuring every k steps (one measurement / k steps): "
                     + ", ".join(f"k={k}: {row[mode]['measure'] / (k * step):.0%}" for k in EVERY))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# runs: the one-epoch digit run on its own clock


RUN_MODES = {"untracked": dict(track=False), "every10-exact": dict(track_every=10),
             "every10-amortised": dict(track_every=10), "every1-amortised": dict(track_every=1),
             "every1-exact": dict(track_every=1)}  # an amortised run's settings: amortised()


def amortised(cfg: RunConfig, args) -> RunConfig:
    """``cfg`` measured the amortised way the command line asks (``--refresh``, ``--full-grid-every``)."""
    return cfg.replace(capture_refresh=args.refresh, full_grid_every=args.full_grid_every)


def runs(args) -> list[dict]:
    modes = [m for m in RUN_MODES if m in args.modes]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            for mode in modes:
                cfg = RunConfig(**{**SIZES[args.size], **RUN_MODES[mode]})
                if "amortised" in mode:
                    cfg = amortised(cfg, args)
                where = os.path.join(tmp, f"{pair}-{len(out)}")
                s = run_experiment(cfg, where, progress=False)
                out.append({"part": "runs", "size": args.size, "pair": pair, "mode": mode, "refresh": cfg.capture.refresh,
                            "full_grid_every": cfg.estimator.full_grid_every,
                            "async": cfg.async_tracking, "wall_seconds": s["wall_seconds"],
                            "fresh_captures": fresh_captures(os.path.join(where, "log.jsonl")),
                            "steps": s["steps"], "measurements": s["measurements"],
                            "measure_seconds": s["measure_seconds"], "measure_phases": s["measure_phases"],
                            "checkpoint_seconds": s["checkpoint_seconds"]})
                print(f"pair {pair}, {mode}: {s['wall_seconds']:.1f} s, {s['measurements']} measurements", flush=True)
    return out


def fresh_captures(log: str) -> int | None:
    """How many measurements of a run's log captured every probe input (None: untracked)."""
    if not os.path.exists(log):
        return None
    return len({r["step"] for r in read_log(log) if r.get("features_from", r["step"]) == r["step"]})


def same_run_ratio(row: dict) -> float:
    """The run's clock over the clock of its own training (wall minus measuring and the
    checkpoints that only a tracked run writes before its end): what it would be against an
    untracked run on the same machine state. This machine's speed moves by 10-40% between runs
    a minute apart, which the ratio against the untracked run of the pair carries and this one
    does not; what training itself may lose to measuring (caches) it leaves out."""
    own = row["wall_seconds"] - row["measure_seconds"] - row.get("checkpoint_seconds", 0.0)
    return row["wall_seconds"] / own


def report_runs(rows: list[dict]) -> str:
    lines = ["| pair | run | refresh, full grid every | wall (s) | measurements | every input captured | capture, fit (s) "
             "| against untracked | training steps per measurement | against its own training |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for pair in sorted({r["pair"] for r in rows}):
        mine = [r for r in rows if r["pair"] == pair]
        plain = next(r for r in mine if r["mode"] == "untracked")
        step = plain["wall_seconds"] / plain["steps"]
        for r in mine:
            extra = r["wall_seconds"] - plain["wall_seconds"]
            per = f"{extra / r['measurements'] / step:.1f}" if r["measurements"] else ""
            fresh = "" if r.get("fresh_captures") is None else r["fresh_captures"]
            own = f"{same_run_ratio(r):.2f}x" if r["measurements"] else ""
            how = f"{r.get('refresh', '')}, {r.get('full_grid_every', '')}" if "amortised" in r["mode"] else ""
            phases = r["measure_phases"]
            split = f"{phases['capture']:.2f}, {phases['fit']:.2f}" if phases else ""
            lines.append(f"| {pair} | {r['mode']} | {how} | {r['wall_seconds']:.1f} | {r['measurements']} | {fresh} | "
                         f"{split} | {r['wall_seconds'] / plain['wall_seconds']:.2f}x | {per} | {own} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# exactness: two trackers on one training run


def exactness(args) -> dict:
    cfg = RunConfig(seed=args.seed, epochs=args.epochs, track_every=args.every, early_points=0)
    task, plan, opt = training_setup(cfg)
    task.model.train()
    trackers = {"exact": make_tracker(cfg.replace(**EXACT, **REFERENCES[args.reference]), task, log_path=None),
                "amortised": make_tracker(amortised(cfg, args).replace(capture_refresh_drift=args.refresh_drift,
                                                                        fold_batch_norm=not args.unfolded),
                                          task, log_path=None)}
    seconds = dict.fromkeys(trackers, 0.0)
    total = plan.total_steps if args.steps is None else min(args.steps, plan.total_steps)
    for step in tqdm(range(total + 1), desc="exactness", unit="step", mininterval=5):
        for mode, t in trackers.items():
            if step >= args.start:
                seconds[mode] += timed(lambda: t.step(step, epoch=plan.epoch(step)))
        if step < total:
            train_step(task, plan, opt, step)
    return {"part": "exactness", "every": args.every, "seed": args.seed, "epochs": args.epochs, "steps": total,
            "start": args.start, "refresh": args.refresh, "full_grid_every": args.full_grid_every,
            "refresh_drift": args.refresh_drift, "fold_batch_norm": not args.unfolded,
            "reference": args.reference, "refreshes": refreshes(trackers["amortised"].rows),
            "seconds": seconds, **compare(trackers["exact"].rows, trackers["amortised"].rows, args.every)}


def refreshes(rows: list[dict]) -> dict:
    """How the amortised tracker's measurements went: with every input captured (fresh) or a
    share of them, and with the whole grid searched or the neighbours of the last choice."""
    steps = {r["step"]: r for r in rows}.values()
    fresh = sum(r["features_from"] == r["step"] for r in steps)
    local = sum(r["search"] == "local" for r in rows if r["bits"] is not None)
    return {"measurements": len(steps), "fresh": fresh, "rows": len(rows), "local_rows": local}


def compare(exact: list[dict], amortised: list[dict], every: int) -> dict:
    """Differences of the amortised rows from the exact rows of the same step, layer and label."""
    ex = {(r["step"], r["feature_set"], r["label_set"]): r for r in exact if r["bits"] is not None}
    diffs, outside = [], []
    for r in amortised:
        e = ex.get((r["step"], r["feature_set"], r["label_set"]))
        if e is None or r["bits"] is None:
            continue
        d = abs(r["bits"] - e["bits"])
        tol = max(HALF_WIDTH_FLOOR, (e["ci_high"] - e["ci_low"]) / 2)
        diffs.append(d)
        if d > tol:
            outside.append({"step": r["step"], "layer": r["feature_set"], "label": r["label_set"],
                            "exact": e["bits"], "amortised": r["bits"], "tolerance": tol,
                            "l2_exact": e["l2"], "l2_amortised": r["l2"], "features_from": r["features_from"]})
    layers = sorted({r["feature_set"] for r in exact})
    same_l2 = [o for o in outside if o["l2_exact"] == o["l2_amortised"]]
    own = own_changes(exact)
    return {"rows": len(diffs), "max_abs_diff": max(diffs), "mean_abs_diff": statistics.fmean(diffs),
            "outside": outside, "outside_same_l2": len(same_l2), "exact_own_changes": own, "turns": {n: {m: turns(rows, n) for m, rows in (("exact", exact),
                                                                                ("amortised", amortised))}
                                          for n in layers}}


def own_changes(exact: list[dict]) -> dict:
    """The exact rows against themselves: how many move from one measurement to the next by more
    than the same tolerance, and how many of those with another penalty chosen. The one-standard-
    error rule jumps between two tied penalties on features that barely moved: the scale any
    other measurement of the same features differs on."""
    series: dict[tuple, list[dict]] = {}
    for r in sorted(exact, key=lambda r: r["step"]):
        if r["bits"] is not None:
            series.setdefault((r["feature_set"], r["label_set"]), []).append(r)
    moves = flips = pairs = 0
    for rows in series.values():
        for a, b in zip(rows, rows[1:]):
            pairs += 1
            if abs(b["bits"] - a["bits"]) > max(HALF_WIDTH_FLOOR, (b["ci_high"] - b["ci_low"]) / 2):
                moves += 1
                flips += a["l2"] != b["l2"]
    return {"pairs": pairs, "beyond_tolerance": moves, "with_another_penalty": flips}


def turns(rows: list[dict], layer: str) -> dict:
    """Where a layer's fine-beyond-coarse peaks (its largest value) and drops (the first step after
    the peak below half of it; None if it never does)."""
    pts = sorted((r["step"], r["beyond_bits"]) for r in rows
                 if r["feature_set"] == layer and r.get("beyond_bits") is not None)
    if not pts:
        return {"peak": None, "drop": None}
    i = max(range(len(pts)), key=lambda k: pts[k][1])
    drop = next((s for s, v in pts[i + 1:] if v < pts[i][1] / 2), None)
    return {"peak": pts[i][0], "peak_bits": pts[i][1], "drop": drop}


def report_exactness(row: dict) -> str:
    lines = [f"every {row['every']} steps from step {row['start']} to {row['steps']}, seed {row['seed']}, amortised: "
             f"refresh {row['refresh']}, full grid every {row['full_grid_every']}"
             f"{'' if row.get('fold_batch_norm', True) else ', batch norms unfolded'}: "
             f"{row['rows']} rows compared; "
             f"|difference| largest {row['max_abs_diff']:.4f} bits, mean {row['mean_abs_diff']:.4f} bits; "
             f"{len(row['outside'])} rows outside max({HALF_WIDTH_FLOOR} bits, the exact 95% half-width), "
             f"{row['outside_same_l2']} of them at the penalty the exact row chose (the others chose another)",
             f"the exact rows against their own previous measurement: {row['exact_own_changes']['beyond_tolerance']} "
             f"of {row['exact_own_changes']['pairs']} move by more than that tolerance, "
             f"{row['exact_own_changes']['with_another_penalty']} of them with another penalty chosen",
             f"measuring: exact ({row['reference']} fits) {row['seconds']['exact']:.1f} s, amortised "
             f"{row['seconds']['amortised']:.1f} s; amortised measurements capturing every input: "
             f"{row['refreshes']['fresh']} of {row['refreshes']['measurements']}; rows searching the neighbours of the "
             f"last choice: {row['refreshes']['local_rows']} of {row['refreshes']['rows']}",
             "| layer | peak, exact | peak, amortised | drop, exact | drop, amortised |", "|---|---|---|---|---|"]
    for layer, t in row["turns"].items():
        e, a = t["exact"], t["amortised"]
        lines.append(f"| {layer} | {e['peak']} | {a['peak']} | {e['drop']} | {a['drop']} |")
    for o in row["outside"][:20]:
        lines.append(f"  outside: step {o['step']} {o['layer']}/{o['label']}: exact {o['exact']:.3f} (l2 "
                     f"{o['l2_exact']:g}), amortised {o['amortised']:.3f} (l2 {o['l2_amortised']:g}, features from "
                     f"step {o['features_from']}), tolerance {o['tolerance']:.3f}")
    return "\n".join(lines)


def amortised_flags(parser, whose: str) -> None:
    """The flags :func:`amortised` reads, defaulting to :data:`AMORTISED`."""
    parser.add_argument("--refresh", type=int, default=AMORTISED["capture_refresh"], help=f"{whose} capture refresh")
    parser.add_argument("--full-grid-every", type=int, default=AMORTISED["full_grid_every"], help=whose)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    c = sub.add_parser("cost", help="one measurement against one training step")
    c.add_argument("--repeats", type=int, default=5)
    c.add_argument("--warm-steps", type=int, default=50, help="SGD steps before timing (a network past its start)")
    c.add_argument("--steps", type=int, default=30, help="SGD steps timed")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--exact-only", action="store_true", help="no amortised tracker (a tree from before it existed)")
    r = sub.add_parser("runs", help="the one-epoch digit run on its own clock")
    r.add_argument("--pairs", type=int, default=2, help="times every run is repeated, alternated")
    r.add_argument("--modes", default=",".join(RUN_MODES), help="comma-separated, of: " + ", ".join(RUN_MODES))
    r.add_argument("--size", choices=tuple(SIZES), default="cpu",
                   help="cpu: the one-epoch digit run; gpu: ResNet-18 at CIFAR-100 size on CUDA, asynchronous")
    amortised_flags(r, "the amortised runs'")
    e = sub.add_parser("exactness", help="exact and amortised trackers on one training run")
    e.add_argument("--every", type=int, default=10)
    e.add_argument("--epochs", type=float, default=RunConfig().epochs, help="the run's plan (default: the default run's)")
    e.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: the whole plan)")
    e.add_argument("--start", type=int, default=0, help="measure from this step on (train untracked before)")
    amortised_flags(e, "the amortised tracker's")
    e.add_argument("--refresh-drift", type=float, default=0.02, help="the amortised tracker's")
    e.add_argument("--unfolded", action="store_true",
                   help="the amortised tracker captures with its batch norms unfolded; with --refresh 1 "
                        "--full-grid-every 1 it is exact too, its features the reference's up to rounding: "
                        "how far the exact estimate moves under rounding alone")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--reference", choices=tuple(REFERENCES), default="cold",
                   help="how the exact tracker fits its probes: from scratch (cold) or on from its last (warm)")
    args = p.parse_args()
    if args.part == "cost":
        rows = [cost(args)]
        print(report_cost(rows[0]))
    elif args.part == "runs":
        args.modes = [m.strip() for m in args.modes.split(",")]
        unknown = sorted(set(args.modes) - set(RUN_MODES))
        if unknown or "untracked" not in args.modes:
            p.error(f"--modes: {unknown or 'untracked is missing'}; choose among {', '.join(RUN_MODES)} "
                    "(untracked, the baseline, always)")
        rows = runs(args)
        print(report_runs(rows))
    else:
        rows = [exactness(args)]
        print(report_exactness(rows[0]))
    record("dense", rows, torch.device("cuda" if getattr(args, "size", "cpu") == "gpu" else "cpu"))


if __name__ == "__main__":
    main()
