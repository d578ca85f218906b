// State of the batched L-BFGS fit (lbfgs_fit.cpp), shared with its fused CPU update.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "probe_layout.h"

namespace uinfo_fast {

constexpr double kArmijo = 1e-4;   // sufficient-decrease constant c1
constexpr int64_t kMaxFails = 25;  // consecutive rejected steps before a probe counts as stalled
constexpr int64_t kMaxFlat = 3;    // trials that change f by under ftol (relative) with no real progress between

// Optimiser state of the probes still running; columns and probes compacted together.
struct FitState {
  ProbeLayout layout;
  std::vector<int64_t> ids;  // original index of each running probe
  at::Tensor orig_cols;      // [Ca] int64: original column of each running column
  at::Tensor l2;             // [Ka] float64
  at::Tensor params, grad, pgrad, dir;  // [D+1, Ca] compute dtype (last row: bias); pgrad = P grad
  at::Tensor f, gd, t, gamma, gmax;  // [Ka] float64: objective, G.dir, step, H0 scale, max |G|
  at::Tensor done;           // [Ka] bool: converged or stalled
  at::Tensor fails, flat, iters, status;  // [Ka] int64 (status: see lbfgs_fit.h)
  at::Tensor hist_s, hist_y, hist_py;  // [m, D+1, Ca] by slot: s, y and P y; zeros for a skipped pair
  at::Tensor sy, ypy;        // [m, m, Ka] float64 by slot: <s_i, y_j> and <y_i, P y_j> per probe
  std::vector<int64_t> group;          // per running probe: index of its penalty's preconditioner
  std::vector<at::Tensor> group_cols;  // per preconditioner: running columns that use it (int64)
};

// One iteration's bookkeeping after the pass at the trial point, for every probe, in plain loops
// on the CPU (the ATen formulation in lbfgs_fit.cpp costs ~300 small operator calls an
// iteration). Same semantics as that formulation: acceptance, history pair and Gram matrices
// in slot `newest` (of `count` in use), step sizes, counters, status, and the next direction.
void lbfgs_update_cpu(FitState& st,
                      const at::Tensor& trial,       // [D+1, Ca] params + t dir
                      const at::Tensor& grad_trial,  // [D+1, Ca] gradient at trial
                      const at::Tensor& pgrad_trial, // [D+1, Ca] P grad_trial
                      const at::Tensor& f_trial,     // [Ka] float64
                      int64_t newest, int64_t count, double tol, double ftol);

#ifdef UINFO_FAST_WITH_CUDA
// The same update in three CUDA launches spread over (element chunks) x (probes) blocks
// (cuda/lbfgs_update_cuda.cu).
void lbfgs_update_cuda(FitState& st, const at::Tensor& trial, const at::Tensor& grad_trial,
                       const at::Tensor& pgrad_trial, const at::Tensor& f_trial, int64_t newest, int64_t count,
                       double tol, double ftol);
#endif

}  // namespace uinfo_fast
