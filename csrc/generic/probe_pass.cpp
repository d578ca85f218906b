#include "probe_pass.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "backend.h"

namespace uinfo_fast {
namespace {

// Rows per chunk: a logits chunk of about 4 MB stays in cache (CPU L2/L3, GPU L2) between the
// product that writes it, the softmax that rewrites it, and the product that reads it back.
int64_t chunk_rows(int64_t n_rows, int64_t n_cols) {
  constexpr int64_t kChunkBytes = int64_t(4) << 20;
  const int64_t rows = std::max<int64_t>(256, kChunkBytes / (4 * std::max<int64_t>(n_cols, 1)));
  return std::min(n_rows, (rows + 63) / 64 * 64);
}

at::Tensor chunked_pass(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& params,
                        const ProbeLayout& layout, at::Tensor* grad, at::Tensor* per_example, const Backend& backend,
                        const Switches& sw) {
  const int64_t n = x.size(0), d = x.size(1), n_cols = params.size(1);
  const auto cdt = params.scalar_type();
  const at::Tensor weight = params.narrow(0, 0, d), bias = params.select(0, d);
  const int64_t step = chunk_rows(n, n_cols);
  at::Tensor buffer = at::empty({step, n_cols}, params.options());
  at::Tensor nll_sum = at::zeros({layout.n_probes}, params.options().dtype(at::kDouble));
  if (grad) grad->zero_();
  for (int64_t r0 = 0; r0 < n; r0 += step) {
    const int64_t rows = std::min(step, n - r0);
    at::Tensor xc = x.narrow(0, r0, rows);
    if (xc.scalar_type() != cdt) xc = xc.to(cdt);  // bf16/fp16 features: fp32 arithmetic
    at::Tensor logits = buffer.narrow(0, 0, rows);
    at::addmm_out(logits, bias, xc, weight);
    at::Tensor nll = backend.softmax_xent(logits, labels.narrow(0, r0, rows), layout.offsets, layout.label_col,
                                          1.0 / static_cast<double>(n), grad != nullptr, sw);
    nll_sum.add_(nll.sum(0, /*keepdim=*/false, at::kDouble));
    if (per_example) per_example->narrow(0, r0, rows).copy_(nll);
    if (grad) {
      // `logits` now holds (softmax - onehot) / N.
      grad->narrow(0, 0, d).addmm_(xc.t(), logits);
      grad->select(0, d).add_(logits.sum(0));
    }
  }
  return nll_sum.div_(static_cast<double>(n));
}

}  // namespace

at::Tensor nll_pass(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& params,
                    const ProbeLayout& layout, at::Tensor* grad, at::Tensor* per_example, const Switches& sw) {
  const Backend& backend = backend_for(x.device());
  // A fused pass writes no per-row losses; the device decides which other inputs it takes.
  at::Tensor nll;
  if (sw.pass == Switches::Pass::fused && grad != nullptr && per_example == nullptr &&
      backend.fused_nll_grad != nullptr && backend.fused_nll_grad(x, labels, params, layout, *grad, nll))
    return nll;
  return chunked_pass(x, labels, params, layout, grad, per_example, backend, sw);
}

at::Tensor penalised_objective(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& params,
                               const ProbeLayout& layout, const at::Tensor& l2, at::Tensor* grad, const Switches& sw) {
  const int64_t d = x.size(1);
  at::Tensor f = nll_pass(x, labels, params, layout, grad, nullptr, sw);
  const at::Tensor weight = params.narrow(0, 0, d);
  const at::Tensor sq = segment_sum(weight.square().sum(0, /*keepdim=*/false, at::kDouble), layout);
  f.add_(l2.mul(sq).mul_(0.5));
  if (grad) grad->narrow(0, 0, d).add_(weight * l2.index_select(0, layout.col2probe).to(params.scalar_type()));
  return f;
}

}  // namespace uinfo_fast
