// One iteration's bookkeeping after the pass at the trial point, for every probe: acceptance,
// the history pair and Gram matrices in slot `newest` (of `count` in use), step sizes, counters,
// status, and the next direction. Each device has a fused one (cpu/cpu_kernels.h,
// cuda/cuda_kernels.h); the device-generic ATen formulation in lbfgs_fit.cpp is the reference
// the tests hold them to.
#pragma once
#include <ATen/core/Tensor.h>

#include "lbfgs_state.h"

namespace uinfo_fast {

using LbfgsUpdateFn = void (*)(FitState& st,
                               const at::Tensor& trial,        // [D+1, Ca] params + t dir
                               const at::Tensor& grad_trial,   // [D+1, Ca] gradient at trial
                               const at::Tensor& pgrad_trial,  // [D+1, Ca] P grad_trial
                               const at::Tensor& f_trial,      // [Ka] float64
                               int64_t newest, int64_t count, double tol, double ftol);

}  // namespace uinfo_fast
