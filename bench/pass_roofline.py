"""How close one optimisation pass of the probe engine runs to what the device allows.

One pass is one call of ``torch.ops.uinfo_fast.probe_objective`` for one feature set: the loss
and gradient of every probe (2 label sets, 20 and 100 classes, x 8 L2 penalties = 16 probes,
C = 960 columns) on the fit split (N = 40,000 of 50,000 train rows, D = 512). In one run:

1. Ceilings of the device (CUDA only): device-to-device copy bandwidth (``dst.copy_(src)`` of a
   2 GiB tensor, bytes read + written) and the matrix-product rate of an 8192^3 product of random
   inputs in float32 (TF32 off), TF32 and bfloat16. CUDA events after warm-up, median of >= 10.
2. The pass's work: FLOPs = 2NDC (logits) + 2NDC (weight gradient), plus ~NC exp in the softmax;
   minimum bytes = X once (N*D*element size) + labels (N*L*8) + params and gradient
   (2*(D+1)*C*4). Floor = max(FLOPs / matmul rate, bytes / copy bandwidth), against the float32
   rate (the pass computes in float32, for bfloat16 features too) and, as what tensor cores
   would allow, against the TF32 and bfloat16 rates.
3. Time of one pass for float32 and bfloat16 features, for each pass variant the C++ selects by
   the environment variable UINFO_FAST_PASS ("chunked", "fused"; read per call), and for a plain
   PyTorch pass (full logits, per-probe log_softmax, residual, x^T R; float32). Each is first
   checked against a float64 reference on the same random inputs (relative error of the loss
   vector and of the gradient), then timed: median of --repeats (>= 20) after 3 warm-ups, CUDA
   events on CUDA (synchronised after each call, so host work inside a call counts),
   perf_counter on CPU. TF32 stays off for the passes. x floor = time / floor.

Every stage records its error and goes on. Prints a markdown table last (variant, dtype,
ms/pass, TFLOP/s, x floor, rel err), with the ceilings above it; --json writes every number.

    python bench/pass_roofline.py --json bench/out/gpu/pass_roofline.json     # full size, CUDA
    python bench/pass_roofline.py --device cpu --size tiny --json /tmp/roof.json   # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import traceback

import torch

from uinfo_fast.engine.extension import ops

from uinfo_fast.engine.layout import probe_layout

from _harness import BENCH_L2_GRID, machine_name  # noqa: E402  (bench/, the script's folder)

SIZES = {
    "full": dict(n=40_000, d=512),  # the fit split (80%) of 50,000 train rows
    "tiny": dict(n=2_000, d=64),
}
CLASS_COUNTS = (20, 100)
VARIANTS = ("chunked", "fused")
ENV = "UINFO_FAST_PASS"


def log(*a):
    print(*a, flush=True)


def err_str(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def timer(device: torch.device, fn, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of `repeats` calls of fn after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


# ---------------------------------------------------------------------------------------------
# 1. ceilings


def copy_bandwidth(device, gib: float, repeats: int) -> dict:
    n = int(gib * (1 << 30)) // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    times = timer(device, lambda: dst.copy_(src), 3, repeats)
    ms = statistics.median(times)
    moved = 2 * n * 4  # read + write
    del src, dst
    return dict(bytes=moved, ms=ms, times_ms=times, GBps=moved / (ms * 1e-3) / 1e9)


def matmul_rate(device, size: int, dtype, tf32: bool, repeats: int) -> dict:
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        gen = torch.Generator(device=device).manual_seed(1)
        a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
        b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
        c = torch.empty(size, size, device=device, dtype=dtype)
        times = timer(device, lambda: torch.mm(a, b, out=c), 3, repeats)
        ms = statistics.median(times)
        flops = 2 * size**3
        ok = bool(torch.isfinite(c).all()) and bool((c != 0).any())
        del a, b, c
        return dict(flops=flops, ms=ms, times_ms=times, TFLOPs=flops / (ms * 1e-3) / 1e12, output_ok=ok,
                    allow_tf32=tf32, dtype=str(dtype).replace("torch.", ""))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def measure_ceilings(device, args, out: dict) -> None:
    if device.type != "cuda":
        log("ceilings: skipped (CPU run: copy bandwidth and matmul rates are measured on CUDA only)")
        out["skipped"] = "cpu"
        return
    try:
        out["copy"] = copy_bandwidth(device, args.copy_gib, args.ceiling_repeats)
        log(f"copy {args.copy_gib:g} GiB d2d: {out['copy']['GBps']:.0f} GB/s (read + write), "
            f"{out['copy']['ms']:.3f} ms")
    except Exception as exc:
        out["copy"] = dict(error=err_str(exc))
        log(f"copy: ERROR {out['copy']['error']}")
    torch.cuda.empty_cache()
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                              ("bf16", torch.bfloat16, False)):
        try:
            out[name] = matmul_rate(device, args.mm_size, dtype, tf32, args.ceiling_repeats)
            log(f"matmul {args.mm_size}^3 {name}: {out[name]['TFLOPs']:.1f} TFLOP/s, {out[name]['ms']:.3f} ms"
                + ("" if out[name]["output_ok"] else " (output not finite or all zero!)"))
        except Exception as exc:
            out[name] = dict(error=err_str(exc))
            log(f"matmul {name}: ERROR {out[name]['error']}")
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# 2. the pass's work and floors


def pass_model(n, d, c, n_label_sets, ceilings: dict) -> dict:
    flops = 4 * n * d * c  # 2NDC logits + 2NDC weight gradient
    model = dict(flops=flops, flops_logits=2 * n * d * c, flops_grad_w=2 * n * d * c, softmax_exp=n * c,
                 bytes={}, floor_ms={})
    for dtype, es in (("float32", 4), ("bfloat16", 2)):
        nbytes = n * d * es + n * n_label_sets * 8 + 2 * (d + 1) * c * 4
        model["bytes"][dtype] = nbytes
        bw = ceilings.get("copy", {}).get("GBps")
        mem_ms = nbytes / (bw * 1e9) * 1e3 if bw else None
        floors = {"memory_ms": mem_ms}
        for rate in ("fp32", "tf32", "bf16"):
            tf = ceilings.get(rate, {}).get("TFLOPs")
            comp = flops / (tf * 1e12) * 1e3 if tf else None
            floors[f"compute_{rate}_ms"] = comp
            parts = [v for v in (comp, mem_ms) if v is not None]
            floors[rate] = max(parts) if comp is not None else None
        model["floor_ms"][dtype] = floors
    return model


# ---------------------------------------------------------------------------------------------
# 3. passes


def groups_of(offsets, label_col):
    """Runs of consecutive probes with the same label set and class count: (lo, n_probes, classes,
    label set, first probe), so that a run's logits reshape to [N, n_probes, classes]."""
    groups = []
    for k, j in enumerate(label_col):
        cls = offsets[k + 1] - offsets[k]
        if groups and groups[-1][3] == j and groups[-1][2] == cls:
            lo, cnt, _, _, k0 = groups[-1]
            groups[-1] = (lo, cnt + 1, cls, j, k0)
        else:
            groups.append((offsets[k], 1, cls, j, k))
    return groups


def torch_pass(x, labels, weight, bias, groups, l2_col, l2_probe, cdt):
    """Plain PyTorch pass in dtype cdt: (objective [K], grad_w [D, C], grad_b [C]) of
    mean NLL + l2/2 ||W_k||^2 per probe, gradient through the residual softmax - onehot."""
    n = x.shape[0]
    xc = x.to(cdt)
    w, b = weight.to(cdt), bias.to(cdt)
    logits = torch.addmm(b, xc, w)
    resid = torch.empty_like(logits)
    nll = []
    for lo, cnt, cls, j, _ in groups:
        seg = logits[:, lo:lo + cnt * cls].view(n, cnt, cls)
        logp = torch.log_softmax(seg, dim=2)
        idx = labels[:, j].view(n, 1, 1).expand(n, cnt, 1)
        nll.append(-logp.gather(2, idx).squeeze(2).sum(0))
        r = logp.exp_()
        r.scatter_add_(2, idx, torch.full((n, cnt, 1), -1.0, dtype=cdt, device=x.device))
        resid[:, lo:lo + cnt * cls] = r.view(n, cnt * cls)
    resid.div_(n)
    sq = torch.cat([w[:, lo:lo + cnt * cls].reshape(-1, cnt, cls).square().sum((0, 2)) for lo, cnt, cls, _, _ in groups])
    f = torch.cat(nll) / n + 0.5 * l2_probe.to(cdt) * sq
    grad_w = torch.addmm(w * l2_col.to(cdt), xc.t(), resid)
    grad_b = resid.sum(0)
    return f, grad_w, grad_b


def rel_err(out, ref) -> float:
    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def run_passes(device, args, size, model, out: list) -> None:
    n, d = size["n"], size["d"]
    offsets, label_col, l2_per_probe = probe_layout(CLASS_COUNTS, BENCH_L2_GRID)
    c = offsets[-1]
    groups = groups_of(offsets, label_col)
    op = ops.probe_objective
    off_t, col_t = (torch.tensor(v, dtype=torch.int64, device=device) for v in (offsets, label_col))
    l2_t = torch.tensor(l2_per_probe, dtype=torch.float64, device=device)
    col2probe = torch.repeat_interleave(torch.arange(len(label_col), device=device), off_t.diff())
    l2_col = l2_t[col2probe]
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    prev_env = os.environ.get(ENV)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for dt_name in ("float32", "bfloat16"):
            dtype = getattr(torch, dt_name)
            try:
                gen = torch.Generator(device=device).manual_seed(0 if dt_name == "float32" else 1)
                x = torch.randn(n, d, device=device, generator=gen).to(dtype)
                labels = torch.stack([torch.randint(0, k, (n,), device=device, generator=gen) for k in CLASS_COUNTS], 1)
                weight = 0.01 * torch.randn(d, c, device=device, generator=gen)
                bias = 0.01 * torch.randn(c, device=device, generator=gen)
                with torch.no_grad():
                    ref = torch_pass(x, labels, weight, bias, groups, l2_col, l2_t, torch.float64)
                ref = (ref[0], torch.cat([ref[1], ref[2][None]], 0))
            except Exception as exc:
                e = err_str(exc)
                log(f"{dt_name}: ERROR preparing inputs/reference: {e}")
                out.append(dict(variant="-", dtype=dt_name, error=e))
                continue
            for variant in (*VARIANTS, "torch"):
                rec = dict(variant=variant if variant == "torch" else f"uinfo_fast/{variant}", dtype=dt_name)
                out.append(rec)
                if variant == "torch":
                    os.environ.pop(ENV, None)
                    fn = lambda: torch_pass(x, labels, weight, bias, groups, l2_col, l2_t, torch.float32)  # noqa: E731
                else:
                    os.environ[ENV] = variant
                    fn = lambda: op(x, labels, weight, bias, off_t, col_t, l2_t)  # noqa: E731
                rec[ENV] = os.environ.get(ENV)
                try:
                    with torch.no_grad():
                        f, gw, gb = fn()
                        rec["rel_err_loss"] = rel_err(f, ref[0])
                        rec["rel_err_grad"] = rel_err(torch.cat([gw, gb[None]], 0), ref[1])
                        del f, gw, gb
                        times = timer(device, fn, 3, args.repeats)
                    ms = statistics.median(times)
                    floors = model["floor_ms"][dt_name]
                    rec.update(ms=ms, times_ms=times, TFLOPs=model["flops"] / (ms * 1e-3) / 1e12,
                               x_floor={k: (ms / floors[k] if floors.get(k) else None) for k in ("fp32", "tf32", "bf16")})
                    log(f"{rec['variant']} {dt_name}: {ms:.3f} ms/pass, {rec['TFLOPs']:.3g} TFLOP/s, "
                        f"rel err loss {rec['rel_err_loss']:.1e} grad {rec['rel_err_grad']:.1e}")
                except Exception as exc:
                    rec["error"] = err_str(exc)
                    rec["traceback"] = traceback.format_exc()[-2000:]
                    log(f"{rec['variant']} {dt_name}: ERROR {rec['error']}")
            del x, labels, weight, bias, ref
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
        if prev_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = prev_env


# ---------------------------------------------------------------------------------------------


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--repeats", type=int, default=20, help="timed passes per variant (at least 20)")
    p.add_argument("--ceiling-repeats", type=int, default=10, help="timed copies/products per ceiling (at least 10)")
    p.add_argument("--copy-gib", type=float, default=2.0)
    p.add_argument("--mm-size", type=int, default=8192)
    p.add_argument("--json", help="write all numbers to this file")
    args = p.parse_args(argv)
    args.repeats = max(20, args.repeats)
    args.ceiling_repeats = max(10, args.ceiling_repeats)
    device = torch.device(args.device)
    size = SIZES[args.size]
    n_probes = len(CLASS_COUNTS) * len(BENCH_L2_GRID)
    c = len(BENCH_L2_GRID) * sum(CLASS_COUNTS)
    try:
        name = machine_name(device)
    except Exception as exc:
        name = f"? ({err_str(exc)})"
    log(f"# pass roofline, {args.size}: N={size['n']} D={size['d']} C={c} ({len(CLASS_COUNTS)} label sets "
        f"{CLASS_COUNTS} x {len(BENCH_L2_GRID)} l2 = {n_probes} probes) on {name}, torch {torch.__version__}")
    result = dict(size=args.size, **size, c=c, k=n_probes, class_counts=list(CLASS_COUNTS), l2=list(BENCH_L2_GRID),
                  device=name, torch=torch.__version__, cuda=torch.version.cuda, repeats=args.repeats,
                  ceiling_repeats=args.ceiling_repeats, ceilings={}, model={}, passes=[])

    def dump():
        if not args.json:
            return
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=1)
        except Exception as exc:
            log(f"json: ERROR {err_str(exc)}")

    try:
        measure_ceilings(device, args, result["ceilings"])
    except Exception as exc:
        result["ceilings"]["error"] = err_str(exc)
        log(f"ceilings: ERROR {result['ceilings']['error']}")
    dump()
    try:
        result["model"] = pass_model(size["n"], size["d"], c, len(CLASS_COUNTS), result["ceilings"])
    except Exception as exc:
        result["model"] = dict(error=err_str(exc), floor_ms={})
    try:
        run_passes(device, args, size, result["model"], result["passes"])
    except Exception as exc:
        result["passes_error"] = err_str(exc)
        log(f"passes: ERROR {result['passes_error']}")
    dump()

    # Summary, table last.
    ceil, model = result["ceilings"], result["model"]
    log()
    log(f"## one probe_objective pass (N={size['n']}, D={size['d']}, C={c}, K={n_probes}) on {name}, "
        f"torch {torch.__version__}")
    if ceil.get("skipped"):
        log("ceilings: not measured on CPU, no floors")
    else:
        cp = ceil.get("copy", {})
        log(f"ceilings: copy {fmt(cp.get('GBps'), '.0f')} GB/s; matmul {args.mm_size}^3 "
            + ", ".join(f"{r} {fmt(ceil.get(r, {}).get('TFLOPs'), '.1f')}" for r in ("fp32", "tf32", "bf16"))
            + " TFLOP/s" + "".join(f" [{k}: {v['error']}]" for k, v in ceil.items() if isinstance(v, dict) and "error" in v))
    if "flops" in model:
        log(f"pass work: {model['flops'] / 1e9:.2f} GFLOP (2NDC logits + 2NDC grad), {model['softmax_exp'] / 1e6:.1f} M exp, "
            "min bytes " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in model["bytes"].items()))
        for dt, fl in model["floor_ms"].items():
            if fl.get("fp32") is not None:
                log(f"floor {dt}: {fl['fp32']:.3f} ms at the fp32 rate (memory {fmt(fl['memory_ms'], '.3f')} ms); "
                    f"what tensor cores would allow: TF32 {fmt(fl['tf32'], '.3f')} ms, bf16 {fmt(fl['bf16'], '.3f')} ms")
    else:
        log(f"pass work: ERROR {model.get('error')}")
    log()
    log("| variant | dtype | ms/pass | TFLOP/s | x floor (fp32; tf32, bf16) | rel err loss / grad |")
    log("|---|---|---|---|---|---|")
    for r in result["passes"]:
        if "error" in r:
            log(f"| {r['variant']} | {r['dtype']} | error | - | - | {r['error'][:120].replace('|', '/')} |")
            continue
        xf = r["x_floor"]
        xs = (f"{fmt(xf['fp32'], '.1f')} ({fmt(xf['tf32'], '.1f')}, {fmt(xf['bf16'], '.1f')})"
              if xf["fp32"] is not None else "-")
        log(f"| {r['variant']} | {r['dtype']} | {r['ms']:.3f} | {r['TFLOPs']:.3g} | {xs} | "
            f"{r['rel_err_loss']:.1e} / {r['rel_err_grad']:.1e} |")


if __name__ == "__main__":
    main()
