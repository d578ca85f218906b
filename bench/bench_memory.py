"""Peak memory of a fit against the size of its features, each case in a fresh subprocess.

A probe pass never builds the [N, C] logits (it works in row chunks of about 4 MB), and input
checks run in row chunks, so the memory a fit adds to its features should be a small share of
them: the optimiser's history (3 m (D+1) C floats), a logits chunk and the outputs. Each case
makes its features, reads the resident set size, runs the fit and reads the peak
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``); the extra memory is the difference.

    python bench/bench_memory.py                    # fit_probes and the estimator, N = 200,000, D = 512
    python bench/bench_memory.py --rows 50000 --dim 256
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _harness import machine_name

CASE = r"""
import json, resource, sys, torch
import uinfo_fast as uf
n, d, what, max_iter = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
g = torch.Generator().manual_seed(0)
x = torch.randn(n, d, generator=g)
y = {"coarse": torch.randint(0, 20, (n,), generator=g), "fine": torch.randint(0, 100, (n,), generator=g)}
x[:, :20] += torch.nn.functional.one_hot(y["coarse"], 20).float()
def rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
before = rss_mib()
if what == "fit_probes":
    uf.fit_probes(x, y, [1e-3, 1e-1], max_iter=max_iter)
else:
    m = n // 5
    uf.estimate_usable_information(x[m:], {k: v[m:] for k, v in y.items()}, x[:m], {k: v[:m] for k, v in y.items()},
                                   l2_grid=[1e-3, 1e-1], n_bootstrap=0, max_iter=max_iter)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"features_mib": x.numel() * 4 / 2**20, "before_mib": before, "peak_mib": peak}))
"""


def run_case(rows: int, dim: int, what: str, max_iter: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CASE, str(rows), str(dim), what, str(max_iter)], capture_output=True,
                         text=True, check=True).stdout
    rec = json.loads(out.strip().splitlines()[-1])
    rec["extra_mib"] = rec["peak_mib"] - rec["before_mib"]
    return {"what": what, "rows": rows, "dim": dim, **rec}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--max-iter", type=int, default=20, help="L-BFGS iterations (memory does not grow with them)")
    p.add_argument("--json", help="write the records to this file")
    args = p.parse_args(argv)
    import torch

    print(f"# peak memory, float32 features {args.rows} x {args.dim}, 2 label sets (20, 100 classes) x 2 penalties, "
          f"{args.max_iter} iterations, on {machine_name(torch.device('cpu'))}")
    print("| call | features (MiB) | extra at peak (MiB) | extra / features |")
    print("|---|---|---|---|")
    records = []
    for what in ("fit_probes", "estimate_usable_information"):
        rec = run_case(args.rows, args.dim, what, args.max_iter)
        records.append(rec)
        print(f"| {what} | {rec['features_mib']:.0f} | {rec['extra_mib']:.0f} | "
              f"{rec['extra_mib'] / rec['features_mib']:.2f}x |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)


if __name__ == "__main__":
    main()
