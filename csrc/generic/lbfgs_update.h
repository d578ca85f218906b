// One iteration's bookkeeping after the pass at the trial point, for every probe: acceptance,
// the history pair and Gram matrices in slot `newest` (of `count` in use), step sizes, counters,
// status (a probe converges when max |gradient| <= its own tolerance, st.tol), and the next
// direction. Written three times with one semantics and one signature:
// lbfgs_update_generic here (ATen, device generic, the reference the tests hold the others to),
// lbfgs_update_cpu (cpu/cpu_kernels.h) and lbfgs_update_cuda (cuda/cuda_kernels.h).
#pragma once
#include <ATen/core/Tensor.h>

#include "lbfgs_state.h"

namespace uinfo_fast {

using LbfgsUpdateFn = void (*)(FitState& st,
                               const at::Tensor& trial,        // [D+1, Ca] params + t dir
                               const at::Tensor& grad_trial,   // [D+1, Ca] gradient at trial
                               const at::Tensor& pgrad_trial,  // [D+1, Ca] P grad_trial
                               const at::Tensor& f_trial,      // [Ka] float64
                               int64_t newest, int64_t count, double ftol);

// Some 300 small operator calls an iteration: on small problems they cost more than the pass,
// which is why each device has a fused update; this one is the readable reference.
void lbfgs_update_generic(FitState& st, const at::Tensor& trial, const at::Tensor& grad_trial,
                          const at::Tensor& pgrad_trial, const at::Tensor& f_trial, int64_t newest, int64_t count,
                          double ftol);

}  // namespace uinfo_fast
