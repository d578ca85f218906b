// One pass over the features for every probe of a layout: loss, gradient, log-likelihoods.
#pragma once
#include <ATen/core/Tensor.h>

#include "probe_layout.h"
#include "switches.h"

namespace uinfo_fast {

// Mean negative log-likelihood of every probe, [K] float64. `params` is [D+1, C] in the compute
// dtype: rows 0..D-1 the weight, row D the bias. When `grad` is given ([D+1, C], overwritten)
// it receives the gradient of the mean NLL; when `per_example` is given ([N, K]) it receives
// every row's NLL. The logits live only in a chunk-sized buffer (or, in the device's fused pass
// when it has one and sw.pass is fused, only on chip), never as a full [N, C] matrix.
at::Tensor nll_pass(const at::Tensor& x,        // [N, D]
                    const at::Tensor& labels,   // [N, L] int64
                    const at::Tensor& params,   // [D+1, C]
                    const ProbeLayout& layout, at::Tensor* grad, at::Tensor* per_example, const Switches& sw);

// Penalised objective f_k = mean NLL_k + l2_k / 2 * ||W_k||^2, [K] float64, and (when `grad` is
// given) its gradient; the bias is not penalised.
at::Tensor penalised_objective(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& params,
                               const ProbeLayout& layout,
                               const at::Tensor& l2,  // [K] float64
                               at::Tensor* grad, const Switches& sw);

}  // namespace uinfo_fast
