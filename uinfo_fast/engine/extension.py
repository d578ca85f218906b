"""Loads the compiled ops (``uinfo_fast._C``) and registers their fake kernels and autograd.

``ops`` is ``torch.ops.uinfo_fast``: ``softmax_xent_``, ``probe_objective``,
``probe_log_likelihood``, ``fit_probes`` and the one-hidden-layer probes' ``mlp_probe_objective``,
``mlp_probe_log_likelihood`` and ``fit_mlp_probes``, whose schemas live in ``csrc/ops.cpp``.
"""
import torch

try:
    from .. import _C  # noqa: F401  (its static initialisers register the ops)
except ImportError as exc:  # pragma: no cover - only when the build is missing
    raise ImportError(
        "uinfo_fast._C is not built. Install with `pip install --no-build-isolation -e .` "
        f"from the repository root (original error: {exc})"
    ) from exc

ops = torch.ops.uinfo_fast


def cuda_kernels_built() -> bool:
    """Whether this build of the extension contains the CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("uinfo_fast::softmax_xent_", "CUDA")


def require_device_support(device: torch.device) -> None:
    """Raise a clear error when a CUDA tensor meets a CPU-only build."""
    if device.type == "cuda" and not cuda_kernels_built():
        raise RuntimeError(
            "uinfo_fast was built without its CUDA kernels, but a CUDA tensor was passed. Rebuild on a "
            "machine with nvcc and a CUDA-enabled torch: UINFO_FAST_CUDA=1 pip install --no-build-isolation -e ."
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"uinfo_fast runs on CPU and CUDA tensors, got a tensor on {device}")


@torch.library.register_fake("uinfo_fast::softmax_xent_")
def _(logits, labels, probe_offsets, probe_label_col, grad_scale, write_residual):
    return logits.new_empty((logits.shape[0], probe_label_col.shape[0]))


@torch.library.register_fake("uinfo_fast::probe_objective")
def _(x, labels, weight, bias, probe_offsets, probe_label_col, l2, check_inputs=True):
    return weight.new_empty((probe_label_col.shape[0],)), torch.empty_like(weight), torch.empty_like(bias)


@torch.library.register_fake("uinfo_fast::probe_log_likelihood")
def _(x, labels, weight, bias, probe_offsets, probe_label_col, check_inputs=True):
    return weight.new_empty((x.shape[0], probe_label_col.shape[0]))


@torch.library.register_fake("uinfo_fast::fit_probes")
def _(x, labels, weight, bias, probe_offsets, probe_label_col, l2, max_iter, tol, history, check_every,
      check_inputs=True, l2_tol=None, schedule="batched", polish=None, polish_l2_tol=None):
    ks = [c.shape[0] for c in probe_label_col]
    return (
        [torch.empty_like(w) for w in weight],
        [torch.empty_like(b) for b in bias],
        [w.new_empty((k,), dtype=torch.float64) for w, k in zip(weight, ks)],
        [w.new_empty((k,), dtype=torch.float64) for w, k in zip(weight, ks)],
        [w.new_empty((k,), dtype=torch.int64) for w, k in zip(weight, ks)],
        [w.new_empty((k,), dtype=torch.int64) for w, k in zip(weight, ks)],
    )


# probe_objective returns its own gradient, so its backward is a scaling of saved outputs.
def _objective_setup_context(ctx, inputs, output):
    probe_offsets = inputs[4]
    _, grad_w, grad_b = output
    ctx.save_for_backward(grad_w, grad_b, probe_offsets)


def _objective_backward(ctx, grad_f, _grad_gw, _grad_gb):
    grad_w, grad_b, probe_offsets = ctx.saved_tensors
    sizes = probe_offsets.diff()
    per_col = torch.repeat_interleave(grad_f, sizes, output_size=grad_w.shape[1])
    return None, None, grad_w * per_col, grad_b * per_col, None, None, None, None


torch.library.register_autograd(
    "uinfo_fast::probe_objective", _objective_backward, setup_context=_objective_setup_context
)


@torch.library.register_fake("uinfo_fast::mlp_probe_objective")
def _(x, labels, w1, b1, w2, b2, probe_label_col, probe_classes, l2, check_inputs=True):
    k = w1.shape[0]
    return (w1.new_empty((k,), dtype=torch.float64), torch.empty_like(w1), torch.empty_like(b1),
            torch.empty_like(w2), torch.empty_like(b2))


@torch.library.register_fake("uinfo_fast::mlp_probe_log_likelihood")
def _(x, labels, w1, b1, w2, b2, probe_label_col, probe_classes, check_inputs=True):
    return w1.new_empty((x.shape[0], w1.shape[0]))


@torch.library.register_fake("uinfo_fast::fit_mlp_probes")
def _(x, labels, w1, b1, w2, b2, probe_label_col, probe_classes, l2, max_iter, tol, history, check_every,
      check_inputs=True, ftol=0.0):
    per_probe = [w.new_empty((w.shape[0],), dtype=torch.float64) for w in w1]
    counts = [w.new_empty((w.shape[0],), dtype=torch.int64) for w in w1]
    return ([torch.empty_like(t) for t in w1], [torch.empty_like(t) for t in b1], [torch.empty_like(t) for t in w2],
            [torch.empty_like(t) for t in b2], per_probe, [torch.empty_like(t) for t in per_probe], counts,
            [torch.empty_like(t) for t in counts])
