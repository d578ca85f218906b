"""Command line: ``uinfo-fast demo`` runs the probe engine on the built-in synthetic features."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch


def _plot(result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({r.feature_set for r in result.results})
    labels = sorted({r.label_set for r in result.results})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        rs = [result[layer, lab] for layer in layers]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(layers))]
        err = [[r.bits - r.ci_low for r in rs], [r.ci_high - r.bits for r in rs]]
        ax.bar(xs, [r.bits for r in rs], width, yerr=err, capsize=3, label=f"{lab} (H = {rs[0].entropy_bits:.2f} bits)")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("usable information (bits)")
    ax.set_title("Usable information per layer (95% bootstrap CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo(args) -> int:
    from .synthetic import layered_features
    from .usable_information import estimate_usable_information

    device = torch.device(args.device)
    xtr, ytr, xte, yte = layered_features(args.n_train, args.n_test, args.dim, args.layers, seed=args.seed)
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    print(f"uinfo-fast demo: {args.layers} synthetic layers, {args.n_train} train / {args.n_test} test rows, "
          f"D={args.dim}, labels coarse (20) and fine (100), on {device}")
    t0 = time.perf_counter()
    res = estimate_usable_information(move(xtr), move(ytr), move(xte), move(yte), seed=args.seed, progress=True)
    print(res)
    print(f"{len(res.results)} (layer, label set) pairs, {sum(f.n_probes for f in res.fits.values())} probes, "
          f"{time.perf_counter() - t0:.1f} s")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "usable_information.json"), "w") as fh:
        json.dump(res.rows(), fh, indent=1)
    _plot(res, os.path.join(args.out, "usable_information.png"))
    print(f"wrote {args.out}/usable_information.json and usable_information.png")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="uinfo-fast", description="Usable information from fast softmax probes.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="estimate usable information on built-in synthetic layer features")
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--n-test", type=int, default=5_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/demo", help="output directory for the JSON and the plot")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
