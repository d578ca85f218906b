// Fused CUDA pass: logits, log-softmax, loss and weight gradient in one kernel, the logits
// kept in shared memory (cuda/fused_pass_cuda.cu). Declared for CUDA builds only.
#pragma once
#include <ATen/core/Tensor.h>

#include "../generic/probe_layout.h"

namespace uinfo_fast {

// Mean NLL of every probe, [K] float64, and its gradient written to `grad` (rows 0..D-1 weight,
// row D bias), with exactly nll_pass's semantics: an out-of-range label makes its probe's loss
// NaN. Requires layout.fits_tiles, CUDA tensors on one device, float32 params and grad.
at::Tensor fused_nll_grad_cuda(const at::Tensor& x,       // [N, D] float32/bfloat16/float16
                               const at::Tensor& labels,  // [N, L] int64
                               const at::Tensor& params,  // [D+1, C] float32
                               const ProbeLayout& layout,
                               at::Tensor& grad);         // [D+1, C] float32, overwritten

}  // namespace uinfo_fast
