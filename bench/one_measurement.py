"""One measurement of the pinned network (``_harness.PINNED``) at step 0: its seconds per phase,
the L-BFGS iterations per layer, and every row's bits and penalty. A quick check that two trees
compute the same thing (run it against another checkout with ``PYTHONPATH``).

    python bench/one_measurement.py
"""
import time

import torch

from uinfo_fast.experiments import RunConfig, make_tracker
from uinfo_fast.tasks import build_task

from _harness import PINNED, commit  # noqa: E402  (bench/, the script's folder)


def main() -> None:
    torch.manual_seed(0)
    cfg = RunConfig(**{**PINNED, "layers": ["layer2", "layer3", "layer4"], "label_sets": ["coarse", "fine"]})
    tracker = make_tracker(cfg, build_task(cfg), None)
    t0 = time.perf_counter()
    rows = tracker.measure(0)
    seconds = time.perf_counter() - t0
    phases = {k: round(v, 2) for k, v in tracker.phase_seconds.items()}
    iterations = {k: int(f.n_iter.sum()) for k, f in tracker.last.fits.items()}
    print(f"commit {commit()}: {seconds:.2f} s, phases {phases}, L-BFGS iterations {iterations}")
    for r in rows:
        print(f"  {r['feature_set']:<8}{r['label_set']:<8}{r['bits']:8.4f} bits  l2 {r['l2']:g}")


if __name__ == "__main__":
    main()
