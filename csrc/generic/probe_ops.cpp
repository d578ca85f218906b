#include "probe_ops.h"

#include <ATen/ATen.h>

#include <tuple>

#include "lbfgs_fit.h"
#include "probe_layout.h"
#include "probe_pass.h"
#include "switches.h"

namespace uinfo_fast {
namespace {

at::Tensor params_of(const at::Tensor& weight, const at::Tensor& bias) {
  return at::cat({weight, bias.unsqueeze(0)}, 0).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> probe_objective(const at::Tensor& x, const at::Tensor& labels,
                                                               const at::Tensor& weight, const at::Tensor& bias,
                                                               const at::Tensor& probe_offsets,
                                                               const at::Tensor& probe_label_col,
                                                               const at::Tensor& l2, bool check_inputs) {
  const Switches sw = read_switches();
  const ProbeLayout layout = check_probe_args(x, labels, weight, bias, probe_offsets, probe_label_col, l2, check_inputs);
  const at::Tensor params = params_of(weight, bias);
  at::Tensor grad = at::empty_like(params);
  const at::Tensor f =
      penalised_objective(x.contiguous(), labels.contiguous(), params, layout, l2.to(at::kDouble), &grad, sw);
  const int64_t d = x.size(1);
  return {f.to(weight.scalar_type()), grad.narrow(0, 0, d).clone(), grad.select(0, d).clone()};
}

at::Tensor probe_log_likelihood(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& weight,
                                const at::Tensor& bias, const at::Tensor& probe_offsets,
                                const at::Tensor& probe_label_col, bool check_inputs) {
  const Switches sw = read_switches();
  const ProbeLayout layout =
      check_probe_args(x, labels, weight, bias, probe_offsets, probe_label_col, at::Tensor(), check_inputs);
  at::Tensor per_example = at::empty({x.size(0), layout.n_probes}, weight.options());
  nll_pass(x.contiguous(), labels.contiguous(), params_of(weight, bias), layout, nullptr, &per_example, sw);
  return per_example.neg_();
}

using TensorVector = std::vector<at::Tensor>;
using FitSetsResult = std::tuple<TensorVector, TensorVector, TensorVector, TensorVector, TensorVector, TensorVector>;

// fit_probes takes one list entry per feature set; this pairs the lists up into FitSets.
std::vector<FitSet> fit_sets(at::TensorList x, at::TensorList weight, at::TensorList bias, at::TensorList offsets,
                             at::TensorList label_col, at::TensorList l2) {
  const size_t n = x.size();
  TORCH_CHECK_VALUE(weight.size() == n && bias.size() == n && offsets.size() == n && label_col.size() == n &&
                        l2.size() == n,
                    "uinfo_fast: fit_probes takes one x, weight, bias, probe_offsets, probe_label_col and l2 per "
                    "feature set; got lists of ", n, ", ", weight.size(), ", ", bias.size(), ", ", offsets.size(), ", ",
                    label_col.size(), " and ", l2.size());
  std::vector<FitSet> sets;
  for (size_t s = 0; s < n; ++s) sets.push_back(FitSet{x[s], weight[s], bias[s], offsets[s], label_col[s], l2[s]});
  return sets;
}

// The schedule argument of fit_probes: "batched" or "path".
bool on_path(c10::string_view schedule) {
  TORCH_CHECK_VALUE(schedule == "batched" || schedule == "path",
                    "uinfo_fast: fit_probes' schedule must be 'batched' or 'path', got '", schedule, "'");
  return schedule == "path";
}

FitSetsResult fit_probes_op(at::TensorList x, const at::Tensor& labels, at::TensorList weight, at::TensorList bias,
                            at::TensorList probe_offsets, at::TensorList probe_label_col, at::TensorList l2,
                            int64_t max_iter, double tol, int64_t history, int64_t check_every, bool check_inputs,
                            std::optional<double> l2_tol, c10::string_view schedule,
                            std::optional<at::TensorList> polish, std::optional<double> polish_l2_tol) {
  const Switches sw = read_switches();
  const FitSchedule plan{max_iter, tol, l2_tol, history, check_every, on_path(schedule)};
  const PolishPlan polishing{polish ? polish->vec() : std::vector<at::Tensor>{}, polish_l2_tol};
  return by_field(fit_probe_sets(fit_sets(x, weight, bias, probe_offsets, probe_label_col, l2), labels, plan,
                                 polishing, check_inputs, sw));
}

}  // namespace

void impl_generic_ops(torch::Library& m) {
  m.impl("probe_objective", &probe_objective);
  m.impl("probe_log_likelihood", &probe_log_likelihood);
  m.impl("fit_probes", &fit_probes_op);
  impl_mlp_ops(m);
}

}  // namespace uinfo_fast
