// The CUDA entries of the backend table and of the dispatcher; a CPU-only build does not
// compile this folder, so it has neither.
#include <torch/library.h>

#include "../generic/backend.h"
#include "../generic/probe_ops.h"
#include "../generic/switches.h"
#include "cuda_kernels.h"

namespace uinfo_fast {
namespace {

// The fused kernel keeps a probe's classes in one 128-slot tile and computes in float32; float64
// and wider probes take the chunked pass.
bool fused_nll_grad(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& params,
                    const ProbeLayout& layout, at::Tensor& grad, at::Tensor& nll) {
  const auto xdt = x.scalar_type();
  if (params.scalar_type() != at::kFloat || !(xdt == at::kFloat || xdt == at::kBFloat16 || xdt == at::kHalf) ||
      !layout.fits_tiles)
    return false;
  nll = fused_nll_grad_cuda(x, labels, params, layout, grad);
  return true;
}

// The public op: reads the switches at its entry, as every op does (generic/switches.h).
at::Tensor softmax_xent_op(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& probe_offsets,
                           const at::Tensor& probe_label_col, double grad_scale, bool write_residual) {
  return softmax_xent_cuda(logits, labels, probe_offsets, probe_label_col, grad_scale, write_residual,
                           read_switches());
}

[[maybe_unused]] const bool registered = register_backend(
    c10::DeviceType::CUDA, Backend{&softmax_xent_cuda, &lbfgs_update_cuda, &fused_nll_grad, &make_cuda_graph_runner});

}  // namespace

TORCH_LIBRARY_IMPL(uinfo_fast, CUDA, m) {
  m.impl("softmax_xent_", &softmax_xent_op);
  impl_generic_ops(m);
}

}  // namespace uinfo_fast
