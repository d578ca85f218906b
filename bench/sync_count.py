"""Host synchronisations of one tracker measurement on CUDA, counted by
``torch.cuda.set_sync_debug_mode("warn")``, synchronous and asynchronous.

Each warning is one operation that made the host wait for the GPU. Synchronous, they all hold
up the training stream; asynchronous, the fits and scores run on the worker's side stream, so
only those of the capture, on the training thread, count against training. Prints the counts of
a warm measurement (the second) of ResNet-18 (width 64) on 2,000 probe images, 3 layers x 2
label sets x 4 penalties, split into the capture and the rest.

    python bench/sync_count.py
"""
from __future__ import annotations

import sys
import warnings

import torch

from uinfo_fast.experiments import RunConfig, make_tracker
from uinfo_fast.tasks import build_task

from _harness import PINNED, machine_name


def count_syncs(fn) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.set_sync_debug_mode("default")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def main() -> int:
    if not torch.cuda.is_available():
        print("sync_count: needs a CUDA device", file=sys.stderr)
        return 2
    cfg = RunConfig(**{**PINNED, **dict(device="cuda", width=64, n_train=2_000, n_test=2_000,
                                        layers=["layer2", "layer3", "layer4"])})
    task = build_task(cfg)
    print(f"# host synchronisations of a warm measurement, on {machine_name(torch.device('cuda'))}")
    tracker = make_tracker(cfg, task, None)
    tracker.measure(0)  # cold start, CUDA warm-up
    capture = count_syncs(tracker.capture_features)
    features = tracker.capture_features()
    rest = count_syncs(lambda: tracker.rows_for(features))
    print("| capture (training thread, both modes) | screening, fits, choice and scores (the worker's side "
          "stream when asynchronous) |")
    print("|---|---|")
    print(f"| {capture} | {rest} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
