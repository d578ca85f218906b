// State of the batched L-BFGS fit (lbfgs_fit.cpp), shared by its three updates: the ATen one
// (lbfgs_update.h) and the fused CPU and CUDA ones (cpu/cpu_kernels.h, cuda/cuda_kernels.h).
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
  at::Tensor tol;            // [Ka] float64: each probe's gradient tolerance
  at::Tensor params, grad, pgrad, dir;  // [D+1, Ca] compute dtype (last row: bias); pgrad = P grad
  at::Tensor f, gd, t, gamma, gmax;  // [Ka] float64: objective, G.dir, step, H0 scale, max |G|
  at::Tensor done;           // [Ka] bool: converged or stalled
  at::Tensor fails, flat, iters, status;  // [Ka] int64 (status: see lbfgs_fit.h)
  at::Tensor hist_s, hist_y, hist_py;  // [m, D+1, Ca] by slot: s, y and P y; zeros for a skipped pair
  at::Tensor sy, ypy;        // [m, m, Ka] float64 by slot: <s_i, y_j> and <y_i, P y_j> per probe
  std::vector<int64_t> group;          // per running probe: index of its penalty's preconditioner
  std::vector<at::Tensor> group_cols;  // per preconditioner: running columns that use it (int64)
};

}  // namespace uinfo_fast
