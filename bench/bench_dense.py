"""What one measurement costs against a training step, and where its time goes.

On the default run's network and probe inputs (`RunConfig()`: the digit set, seed 0), after
`--warm-steps` SGD steps of the run, it times

  step     one SGD step of the run (batch 32), the median of `--steps` steps;
  floor    plain `torch.inference_mode()` forward passes of every probe input (probe-train,
           validation and test) in eval mode, at the tracker's batch size: what a capture
           cannot go below;
  capture  the tracker's capture of the same inputs (hooks, pooling, copies);
  measure  a whole measurement (`tracker.measure`), and each of its phases,

`--repeats` times, floor and capture alternated, and prints the medians in seconds and in
training steps, capture against the floor, and the overhead of measuring every 1, 10 and 100
steps (one measurement over k training steps). One JSON row per run goes to
`bench/rows/dense.jsonl`, tagged with the machine and the commit (`bench/tables.py` makes tables of them).

    python bench/bench_dense.py --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from uinfo_fast.experiments import RunConfig, make_tracker, train_step
from uinfo_fast.tracking.capture import eval_mode

from _harness import commit, machine_name, record, training_setup  # noqa: E402  (bench/, the script's folder)

EVERY = (1, 10, 100)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


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


def measure_once(tracker, step: int) -> dict[str, float]:
    """Seconds of one whole measurement and of each of its phases."""
    before = dict(tracker.phase_seconds)
    total = timed(lambda: tracker.measure(step))
    return {"measure": total, **{k: tracker.phase_seconds[k] - before[k] for k in before}}


def run(args) -> dict:
    cfg = RunConfig(seed=args.seed)
    task, plan, opt = training_setup(cfg)
    task.model.train()
    step_seconds(task, plan, opt, 0, args.warm_steps)
    steps = step_seconds(task, plan, opt, args.warm_steps, args.steps)
    tracker = make_tracker(cfg, task, log_path=None)
    floor_pass(tracker)  # warm-up: allocator, kernels
    tracker.capture_features()
    floors, captures, measures = [], [], []
    for r in range(args.repeats):
        floors.append(timed(lambda: floor_pass(tracker)))
        captures.append(timed(tracker.capture_features))
        measures.append(measure_once(tracker, args.warm_steps + args.steps + r))
    med = {k: statistics.median(m[k] for m in measures) for k in measures[0]}
    return {"machine": machine_name(torch.device("cpu")), "commit": commit(), "threads": torch.get_num_threads(),
            "probe_inputs": sum(tracker.n_rows.values()), "batch_size": cfg.batch_size, "repeats": args.repeats,
            "step": statistics.median(steps), "floor": statistics.median(floors),
            "capture": statistics.median(captures), **med}


def report(row: dict) -> str:
    step = row["step"]
    lines = [f"{row['machine']}, commit {row['commit']}: default digit run, {row['probe_inputs']} probe inputs, "
             f"training batch {row['batch_size']}, medians of {row['repeats']}",
             "| what | seconds | training steps |", "|---|---|---|"]
    for key in ("step", "floor", "capture", "measure", "fit", "polish", "score", "log"):
        lines.append(f"| {key} | {row[key]:.4f} | {row[key] / step:.2f} |")
    lines.append(f"capture / floor: {row['capture'] / row['floor']:.2f}; capture's share of a measurement: "
                 f"{row['capture'] / row['measure']:.0%}")
    lines.append("overhead of measuring every k steps (one measurement / k steps): "
                 + ", ".join(f"k={k}: {row['measure'] / (k * step):.0%}" for k in EVERY))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warm-steps", type=int, default=50, help="SGD steps before timing (a network past its start)")
    p.add_argument("--steps", type=int, default=30, help="SGD steps timed")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    row = run(args)
    print(report(row))
    record("dense", [row], torch.device("cpu"))


if __name__ == "__main__":
    main()
