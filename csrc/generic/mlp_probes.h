// One-hidden-layer probes: q(y | x) = softmax(relu(x W1 + b1) W2 + b2), many at once.
//
// Probe k of a feature set owns W1 [D, H], b1 [H], W2 [H, C] and b2 [C], stacked over probes as
// w1 [K, D, H], b1 [K, H], w2 [K, H, C], b2 [K, C]. C is the widest probe's class count: probe k
// uses its first classes[k] columns, the others are left out of its softmax and held at zero.
// The objective of probe k is mean NLL + l2_k / 2 (||W1||^2 + ||W2||^2), biases not penalised:
// scikit-learn's MLPClassifier with alpha = l2 * N.
//
// Written once against ATen (device generic): the first layers of all probes of a feature set
// are one batched product over the shared x, the second layers one batched product per run of
// neighbouring probes with the same class count (mlp_pass.h).
#pragma once
#include <ATen/core/Tensor.h>

#include <tuple>
#include <vector>

namespace uinfo_fast {

// (objective [K] float64, grad w1, grad b1, grad w2, grad b2)
using MlpGradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// (w1, b1, w2, b2, objective [K] float64, grad_max [K] float64, n_iter [K] int64, status [K] int64)
using MlpFitResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                at::Tensor>;

struct MlpSet {
  at::Tensor x;                      // [N, D] floating
  at::Tensor w1, b1, w2, b2;         // starting parameters, compute_dtype(x) or float64
  at::Tensor probe_label_col;        // [K] int64: the label column each probe predicts
  at::Tensor probe_classes;          // [K] int64: each probe's class count, 2..C
  at::Tensor l2;                     // [K] penalties >= 0
};

// Validates one set's arguments (TypeError / ValueError naming the argument); with check_values
// also the label range and finite x. `l2` may be undefined.
void check_mlp_args(const MlpSet& set, const at::Tensor& labels, bool check_values);

// The penalised objective of every probe and its gradient.
MlpGradients mlp_objective(const MlpSet& set, const at::Tensor& labels, bool check_inputs);

// log q_k(y_i | x_i), [N, K] in the parameters' dtype.
at::Tensor mlp_log_likelihood(const MlpSet& set, const at::Tensor& labels, bool check_inputs);

// Batched L-BFGS over every probe of every set, from the starting parameters given, with the
// linear fit's stopping rules and status codes (lbfgs_fit.h): a probe converges when
// max |gradient| <= tol; 2 objective flat at the working precision, 3 line search failed, 0
// stopped at max_iter. With ftol > 0 also 4 (converged): the objective fell by under ftol,
// relative, over the last kSlowWindow iterations. A ReLU network's objective has kinks wherever
// a unit's input crosses 0 at a row, and on a few thousand rows its gradient can stay far above
// any small tol at the point where the fit has stopped moving. Each probe has its own history, step and line search (backtracking
// Armijo), and one pass per iteration evaluates all of them; the host looks every check_every
// iterations, drops finished probes and stops when none is left.
constexpr int64_t kSlowWindow = 20;

std::vector<MlpFitResult> fit_mlp_probe_sets(const std::vector<MlpSet>& sets, const at::Tensor& labels,
                                             int64_t max_iter, double tol, int64_t history, int64_t check_every,
                                             bool check_inputs, double ftol);

}  // namespace uinfo_fast
