"""Where to stop a one-hidden-layer probe: its test cross-entropy after a given number of L-BFGS
iterations against a fit five times as long, beside how far its objective fell over the last 20
iterations (what the ``ftol`` rule of engine/mlp.py looks at).

    uinfo-fast run --seed 41 --out runs/digits_s41        # any finished digit run
    python bench/mlp_stopping.py runs/digits_s41          # rows in bench/rows/mlp_stopping.jsonl

The features are those of the run's probe inputs at its checkpoint (the end of training), each
layer standardised on its probe-train rows, the test rows clipped to their range, as the
estimator does. Every fit starts from the same weights (seed 0), with tol 1e-6 and ftol 0 so that
only the iteration cap stops it.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import machine_name, record  # noqa: E402

from uinfo_fast.engine.probe_rows import standardisation, standardise, with_fit_range  # noqa: E402
from uinfo_fast.engine.mlp import fit_mlp_probes  # noqa: E402
from uinfo_fast.experiments.config import RunConfig  # noqa: E402
from uinfo_fast.experiments.run import load_checkpoint  # noqa: E402
from uinfo_fast.tasks.registry import build_task  # noqa: E402
from uinfo_fast.tracking.capture import FeatureCapture  # noqa: E402

LN2 = 0.6931471805599453
CAPS = (50, 100, 200, 300, 600)
WINDOW = 20


def run_features(run_dir: str):
    """({split: {layer: features}}, {split: labels}) of the run's probe inputs at its checkpoint."""
    cfg = RunConfig.from_json(json.load(open(os.path.join(run_dir, "config.json"))))
    task = build_task(cfg)
    task.model.load_state_dict(load_checkpoint(os.path.join(run_dir, "checkpoint.pt"), cfg)["model"])
    task.model.eval()
    capture = FeatureCapture(task.model, task.layers)
    feats = {"train": capture(task.probe_train_x), "test": capture(task.probe_test_x)}
    return feats, {"train": task.probe_train_labels, "test": task.probe_test_labels}


def test_bits(x, y, xt, yt, l2, hidden, max_iter) -> tuple[float, float]:
    """(objective, test cross-entropy in bits) of one probe fitted for max_iter iterations."""
    fit = fit_mlp_probes(x, y, [l2], hidden=hidden, restarts=1, max_iter=max_iter, tol=1e-6, ftol=0.0)
    return float(fit.objective[0]), float(fit.cross_entropy(xt, yt)[0]) / LN2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a finished run directory of the digit task")
    ap.add_argument("--layers", default="layer2,layer4")
    ap.add_argument("--label", default="fine")
    ap.add_argument("--l2", default="1e-3,1e-2")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    feats, labels = run_features(args.run)
    rows = []
    for layer in args.layers.split(","):
        scaling = standardisation(feats["train"][layer])
        x = standardise(feats["train"][layer], scaling)
        xt = standardise(feats["test"][layer], with_fit_range(scaling, x))
        y, yt = labels["train"][args.label], labels["test"][args.label]
        for l2 in (float(v) for v in args.l2.split(",")):
            _, reference = test_bits(x, y, xt, yt, l2, args.hidden, 5 * CAPS[-1] // 2)
            for cap in CAPS:
                f_a, bits = test_bits(x, y, xt, yt, l2, args.hidden, cap)
                f_b, _ = test_bits(x, y, xt, yt, l2, args.hidden, cap + WINDOW)
                rows.append(dict(layer=layer, label=args.label, l2=l2, iterations=cap,
                                 relative_fall_over_20=(f_a - f_b) / f_a, test_bits_minus_long_fit=bits - reference,
                                 long_fit_iterations=5 * CAPS[-1] // 2, run=os.path.basename(args.run.rstrip("/"))))
                print(f"{layer} l2={l2:g} {cap:4d} it: objective fell {rows[-1]['relative_fall_over_20']:.1e} "
                      f"over the next 20; test CE - long fit {rows[-1]['test_bits_minus_long_fit']:+.4f} bits",
                      flush=True)
    print(machine_name(torch.device("cpu")))
    if not args.no_record:
        print("rows ->", record("mlp_stopping", rows, torch.device("cpu")))


if __name__ == "__main__":
    main()
