// Batched L-BFGS for many softmax probes at once, every decision taken on the device.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <vector>

#include "switches.h"

namespace uinfo_fast {

// (weight [D, C], bias [C], objective [K] float64, grad_max [K] float64, n_iter [K] int64,
// status [K] int64)
using FitResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// One feature set of a fit: its features and its probes' starting parameters, layout and penalties.
struct FitSet {
  at::Tensor x;                // [N, D] float32/bfloat16/float16/float64
  at::Tensor weight;           // [D, C] initial weights (compute dtype, or float64)
  at::Tensor bias;             // [C] initial bias
  at::Tensor probe_offsets;    // [K+1] int64
  at::Tensor probe_label_col;  // [K] int64
  at::Tensor l2;               // [K] penalties, >= 0
};

// The iteration limits and the order of a fit. `path`: the probes of each set are fitted one
// distinct penalty at a time, from the largest down, each stage started from a prediction off the
// stages before it (the secant through their solutions); otherwise all at once.
struct FitSchedule {
  int64_t max_iter;
  double tol;
  std::optional<double> l2_tol;
  int64_t history, check_every;
  bool path;
};

// The float64 polish after the fit: per set, the probes listed in `probes` whose max |gradient|
// is above min(tol, l2_tol * penalty) are fitted on in float64 until it is not. Near-separable
// probes go flat in float32 while their weights can still move; float64 has no such floor.
struct PolishPlan {
  std::vector<at::Tensor> probes;  // per set [P_s] int64 probe indices; empty: no polish
  std::optional<double> l2_tol;
};

// Minimises f_k(W_k, b_k) = mean NLL_k + l2_k / 2 ||W_k||^2 for every probe k of every feature
// set, each from its starting parameters (on a path, the first stage's), on the shared labels
// [N, L] int64. The sets iterate in lockstep, stage by stage, each exactly as it would alone, and
// a host check (every `check_every` iterations) costs one synchronisation for all of them. A
// probe converges when max |gradient| <= tol, and with `l2_tol` also <= l2_tol * its penalty.
// Status: 0 stopped at max_iter, 1 converged by the gradient, 2 objective flat at the working
// precision (three trials changed it by under machine epsilon, relative, with no real decrease in
// between), 3 line search failed 25 times running. 1 and 2 count as converged. `check_inputs`:
// label range and finite x (see check_probe_args).
// Then the polish (`polish`), its iterations added to each probe's count.
std::vector<FitResult> fit_probe_sets(const std::vector<FitSet>& sets, const at::Tensor& labels,
                                      const FitSchedule& schedule, const PolishPlan& polish, bool check_inputs,
                                      const Switches& sw);

}  // namespace uinfo_fast
