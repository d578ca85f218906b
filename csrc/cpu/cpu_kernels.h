// The CPU kernels (this folder), reached through the CPU Backend (cpu_backend.cpp).
#pragma once
#include <ATen/core/Tensor.h>

#include "../generic/lbfgs_state.h"
#include "../generic/switches.h"

namespace uinfo_fast {

// softmax_xent_ (semantics in ops.cpp): one row at a time, probes of a row in sequence; float32
// through AVX2 where the CPU has it and sw.no_avx2 is off, else a scalar loop.
at::Tensor softmax_xent_cpu(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& probe_offsets,
                            const at::Tensor& probe_label_col, double grad_scale, bool write_residual,
                            const Switches& sw);

// The L-BFGS update of generic/lbfgs_update.h in plain loops, one probe per task.
void lbfgs_update_cpu(FitState& st, const at::Tensor& trial, const at::Tensor& grad_trial,
                      const at::Tensor& pgrad_trial, const at::Tensor& f_trial, int64_t newest, int64_t count,
                      double ftol);

}  // namespace uinfo_fast
