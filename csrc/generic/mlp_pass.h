// The pass of the one-hidden-layer probes (mlp_probes.h) over packed parameters, shared by their
// ops and their fit. Each probe's parameters are one row of params [K, P], P = D H + H + H C + C:
// W1, b1, W2, b2 in that order, so that the optimiser sees one vector per probe and dropping a
// finished probe is one row selection.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "mlp_probes.h"

namespace uinfo_fast {

struct MlpShape {
  int64_t K = 0, D = 0, H = 0, C = 0;
  int64_t n_params() const { return D * H + H + H * C + C; }
};

// What a pass needs besides the parameters, for the running probes.
struct MlpData {
  MlpShape shape;
  at::Tensor x;          // [N, D] in the parameters' dtype, contiguous
  at::Tensor y;          // [K, 1, N] int64: each probe's labels
  at::Tensor minus_one;  // [K, 1, N] -1 in the parameters' dtype (the one-hot of the residual)
  at::Tensor l2;         // [K] float64
  // Each probe's class count (host). A pass computes the softmax layer of each run of neighbours
  // with the same count over their own columns only, so a probe of 20 classes beside one of 100
  // costs 20 columns, not 100 masked to 20.
  std::vector<int64_t> classes;

  // The same data for the probes `keep` alone (`keep_t`: the same indices as an int64 tensor on
  // the data's device).
  MlpData select(const std::vector<int64_t>& keep, const at::Tensor& keep_t) const;
};

MlpData mlp_data(const MlpSet& set, const at::Tensor& labels, c10::ScalarType dtype);

// params [K, P] from the four stacked tensors (columns past a probe's classes zeroed), and back.
at::Tensor pack_mlp(const MlpSet& set, const MlpShape& shape, c10::ScalarType dtype);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> unpack_mlp(const at::Tensor& params, const MlpShape& shape);

// Mean NLL + l2/2 (||W1||^2 + ||W2||^2) per probe, [K] float64; its gradient into `grad` ([K, P],
// overwritten) when given; every row's NLL into `per_example` ([K, N]) when given.
at::Tensor mlp_pass(const MlpData& data, const at::Tensor& params, at::Tensor* grad, at::Tensor* per_example);

}  // namespace uinfo_fast
