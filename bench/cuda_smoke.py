"""Every CUDA kernel of the extension once, on small inputs, checked against the CPU kernels.

Small enough to run under compute-sanitizer (memcheck, racecheck), which slows kernels 10-100x:

    compute-sanitizer --tool memcheck python bench/cuda_smoke.py
    compute-sanitizer --tool racecheck python bench/cuda_smoke.py

Covers softmax_xent_ (float32, float64), probe_objective through both pass variants
(UINFO_FAST_PASS=fused / chunked; float32 and bfloat16 features, probes that share a tile and one
too wide for a tile), probe_log_likelihood, and fit_probes with the fused and the generic
(UINFO_FAST_GENERIC_LBFGS) bookkeeping and with its iteration blocks replayed as CUDA graphs or not
(UINFO_FAST_CUDA_GRAPHS). Exits 1 on a mismatch with the CPU result.
"""
import os
import sys

import torch

import uinfo_fast as uf
from uinfo_fast.engine.extension import ops

failures = []


def check(name, got, want, rtol):
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    err = float((got - want).norm() / want.norm().clamp_min(1e-30))
    ok = bool(torch.isfinite(got).all()) and err <= rtol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: rel err {err:.2e}", flush=True)
    if not ok:
        failures.append(name)


def layout(class_counts):
    offsets = [0]
    for c in class_counts:
        offsets.append(offsets[-1] + c)
    return torch.tensor(offsets), torch.arange(len(class_counts))


def main() -> int:
    # An optional device argument ("cpu") checks this script itself on a machine without a GPU.
    dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("cuda_smoke: no CUDA device", file=sys.stderr)
        return 2
    gen = torch.Generator().manual_seed(0)
    n, d = 517, 37
    # Probes that share tiles, a full tile (128 classes), and then one wider than a tile (130),
    # which sends the fused pass back to the chunked one.
    for counts in ([3, 20, 100, 7, 128, 2, 2], [3, 20, 130]):
        run_layout(counts, n, d, gen, dev)
    fit(n, d, gen, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print("cuda_smoke:", "FAILED " + ", ".join(failures) if failures else "all ok", flush=True)
    return 1 if failures else 0


def run_layout(counts, n, d, gen, dev):
    offsets, label_col = layout(counts)
    c = sum(counts)
    labels = torch.stack([torch.randint(0, k, (n,), generator=gen) for k in counts], 1)

    for dt in (torch.float32, torch.float64):
        logits = torch.randn(n, c, generator=gen, dtype=dt)
        cpu_logits = logits.clone()
        nll_cpu = ops.softmax_xent_(cpu_logits, labels, offsets, label_col, 1.0 / n, True)
        gpu_logits = logits.to(dev)
        nll_gpu = ops.softmax_xent_(gpu_logits, labels.to(dev), offsets.to(dev), label_col.to(dev), 1.0 / n, True)
        check(f"softmax_xent_ {dt} nll", nll_gpu, nll_cpu, 1e-6)
        check(f"softmax_xent_ {dt} residual", gpu_logits, cpu_logits, 1e-6)

    w = 0.1 * torch.randn(d, c, generator=gen)
    b = 0.1 * torch.randn(c, generator=gen)
    l2 = torch.rand(len(counts), generator=gen, dtype=torch.float64) * 1e-2
    for xdt in (torch.float32, torch.bfloat16):
        x = torch.randn(n, d, generator=gen).to(xdt)
        f_cpu, gw_cpu, gb_cpu = ops.probe_objective(x, labels, w, b, offsets, label_col, l2)
        for variant in ("fused", "chunked"):
            os.environ["UINFO_FAST_PASS"] = variant
            args = [t.to(dev) for t in (x, labels, w, b, offsets, label_col, l2)]
            f, gw, gb = ops.probe_objective(*args)
            check(f"probe_objective {counts} {variant} {xdt} f", f, f_cpu, 1e-5)
            check(f"probe_objective {variant} {xdt} grad W", gw, gw_cpu, 1e-5)
            check(f"probe_objective {variant} {xdt} grad b", gb, gb_cpu, 1e-5)
        os.environ.pop("UINFO_FAST_PASS", None)
        ll_cpu = ops.probe_log_likelihood(x, labels, w, b, offsets, label_col)
        ll = ops.probe_log_likelihood(*[t.to(dev) for t in (x, labels, w, b, offsets, label_col)])
        check(f"probe_log_likelihood {xdt}", ll, ll_cpu, 1e-5)


def fit(n, d, gen, dev):
    x = torch.randn(n, d, generator=gen)
    fine = torch.randint(0, 20, (n,), generator=gen)
    y = {"coarse": fine % 5, "fine": fine}
    for generic in (False, True):
        if generic:
            os.environ["UINFO_FAST_GENERIC_LBFGS"] = "1"
        cpu = uf.fit_probes(x, y, [1e-3, 1e-1], max_iter=12, check_every=4)
        gpu = uf.fit_probes(x.to(dev), {k: v.to(dev) for k, v in y.items()}, [1e-3, 1e-1], max_iter=12, check_every=4)
        check(f"fit_probes {'generic' if generic else 'fused'} update: objective", gpu.objective, cpu.objective, 1e-4)
        os.environ.pop("UINFO_FAST_GENERIC_LBFGS", None)
    # With UINFO_FAST_CUDA_GRAPHS=1, blocks of 10 iterations after the first 10 replay as CUDA
    # graphs; with 0 (the default) the same kernels are issued one by one.
    fits = []
    for graphs in ("1", "0"):
        os.environ["UINFO_FAST_CUDA_GRAPHS"] = graphs
        fits.append(uf.fit_probes(x.to(dev), {k: v.to(dev) for k, v in y.items()}, [1e-4, 1e-1], max_iter=40,
                                  check_every=10))
    os.environ.pop("UINFO_FAST_CUDA_GRAPHS", None)
    check("fit_probes CUDA graph blocks vs eager: objective", fits[0].objective, fits[1].objective, 1e-6)


if __name__ == "__main__":
    sys.exit(main())
