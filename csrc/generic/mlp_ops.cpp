// The op entries of the one-hidden-layer probes (schemas in ops.cpp), registered for each device
// by impl_generic_ops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "mlp_probes.h"
#include "probe_ops.h"

namespace uinfo_fast {
namespace {

using TensorVector = std::vector<at::Tensor>;
using MlpFitSetsResult = std::tuple<TensorVector, TensorVector, TensorVector, TensorVector, TensorVector,
                                    TensorVector, TensorVector, TensorVector>;

MlpGradients mlp_probe_objective(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& w1,
                                 const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                                 const at::Tensor& probe_label_col, const at::Tensor& probe_classes,
                                 const at::Tensor& l2, bool check_inputs) {
  return mlp_objective(MlpSet{x, w1, b1, w2, b2, probe_label_col, probe_classes, l2}, labels, check_inputs);
}

at::Tensor mlp_probe_log_likelihood(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& w1,
                                    const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                                    const at::Tensor& probe_label_col, const at::Tensor& probe_classes,
                                    bool check_inputs) {
  return mlp_log_likelihood(MlpSet{x, w1, b1, w2, b2, probe_label_col, probe_classes, at::Tensor()}, labels,
                            check_inputs);
}

// The op's lists, one entry per feature set, paired up into MlpSets.
std::vector<MlpSet> mlp_sets(at::TensorList x, at::TensorList w1, at::TensorList b1, at::TensorList w2,
                             at::TensorList b2, at::TensorList label_col, at::TensorList classes, at::TensorList l2) {
  const size_t n = x.size();
  for (size_t size : {w1.size(), b1.size(), w2.size(), b2.size(), label_col.size(), classes.size(), l2.size()})
    TORCH_CHECK_VALUE(size == n, "uinfo_fast: fit_mlp_probes takes one x, w1, b1, w2, b2, probe_label_col, "
                      "probe_classes and l2 per feature set; got ", n, " x and a list of ", size);
  std::vector<MlpSet> sets;
  for (size_t s = 0; s < n; ++s) sets.push_back(MlpSet{x[s], w1[s], b1[s], w2[s], b2[s], label_col[s], classes[s], l2[s]});
  return sets;
}

MlpFitSetsResult fit_mlp_probes_op(at::TensorList x, const at::Tensor& labels, at::TensorList w1, at::TensorList b1,
                                   at::TensorList w2, at::TensorList b2, at::TensorList probe_label_col,
                                   at::TensorList probe_classes, at::TensorList l2, int64_t max_iter, double tol,
                                   int64_t history, int64_t check_every, bool check_inputs, double ftol) {
  return by_field(fit_mlp_probe_sets(mlp_sets(x, w1, b1, w2, b2, probe_label_col, probe_classes, l2), labels,
                                     max_iter, tol, history, check_every, check_inputs, ftol));
}

}  // namespace

void impl_mlp_ops(torch::Library& m) {
  m.impl("mlp_probe_objective", &mlp_probe_objective);
  m.impl("mlp_probe_log_likelihood", &mlp_probe_log_likelihood);
  m.impl("fit_mlp_probes", &fit_mlp_probes_op);
}

}  // namespace uinfo_fast
