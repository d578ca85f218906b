// Schemas of the uinfo_fast ops and their device-generic implementations.
//
// softmax_xent_ is the device-specific kernel (csrc/cpu, csrc/cuda). The other ops are written
// once against ATen and call it through the dispatcher, so they are registered for CPU and,
// when the CUDA kernels are built, for CUDA with the same code and the same semantics.
#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "lbfgs_fit.h"
#include "probe_layout.h"
#include "probe_pass.h"
#include "softmax_xent.h"

// The extension is loaded as a Python module only to run the static registrations below.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace uinfo_fast {

void check_softmax_xent_args(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& probe_offsets,
                             const at::Tensor& probe_label_col) {
  TORCH_CHECK_TYPE(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
                   "uinfo_fast: logits must be float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK_VALUE(logits.dim() == 2 && logits.is_contiguous(),
                    "uinfo_fast: logits must be a contiguous 2-D [B, C] tensor, got shape ", logits.sizes());
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong && probe_offsets.scalar_type() == at::kLong &&
                       probe_label_col.scalar_type() == at::kLong,
                   "uinfo_fast: labels, probe_offsets and probe_label_col must be int64");
  TORCH_CHECK_VALUE(labels.dim() == 2 && labels.size(0) == logits.size(0),
                    "uinfo_fast: labels must be [B, L] with B = logits.size(0) = ", logits.size(0), ", got shape ",
                    labels.sizes());
  TORCH_CHECK_VALUE(probe_label_col.dim() == 1 && probe_offsets.dim() == 1 &&
                        probe_offsets.size(0) == probe_label_col.size(0) + 1,
                    "uinfo_fast: probe_offsets must be [K+1] and probe_label_col [K], got shapes ",
                    probe_offsets.sizes(), " and ", probe_label_col.sizes());
  for (const at::Tensor* t : {&labels, &probe_offsets, &probe_label_col})
    TORCH_CHECK_VALUE(t->device() == logits.device(), "uinfo_fast: all softmax_xent_ arguments must be on ",
                      logits.device(), ", found one on ", t->device());
}

at::Tensor call_softmax_xent_(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& probe_offsets,
                              const at::Tensor& probe_label_col, double grad_scale, bool write_residual) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("uinfo_fast::softmax_xent_", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, double, bool)>();
  return op.call(logits, labels, probe_offsets, probe_label_col, grad_scale, write_residual);
}

namespace {

at::Tensor params_of(const at::Tensor& weight, const at::Tensor& bias) {
  return at::cat({weight, bias.unsqueeze(0)}, 0).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> probe_objective(const at::Tensor& x, const at::Tensor& labels,
                                                               const at::Tensor& weight, const at::Tensor& bias,
                                                               const at::Tensor& probe_offsets,
                                                               const at::Tensor& probe_label_col,
                                                               const at::Tensor& l2) {
  const ProbeLayout layout = check_probe_args(x, labels, weight, bias, probe_offsets, probe_label_col, l2);
  const at::Tensor params = params_of(weight, bias);
  at::Tensor grad = at::empty_like(params);
  const at::Tensor f = penalised_objective(x.contiguous(), labels.contiguous(), params, layout, l2.to(at::kDouble), &grad);
  const int64_t d = x.size(1);
  return {f.to(weight.scalar_type()), grad.narrow(0, 0, d).clone(), grad.select(0, d).clone()};
}

at::Tensor probe_log_likelihood(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& weight,
                                const at::Tensor& bias, const at::Tensor& probe_offsets,
                                const at::Tensor& probe_label_col) {
  const ProbeLayout layout = check_probe_args(x, labels, weight, bias, probe_offsets, probe_label_col, at::Tensor());
  at::Tensor per_example = at::empty({x.size(0), layout.n_probes}, weight.options());
  nll_pass(x.contiguous(), labels.contiguous(), params_of(weight, bias), layout, nullptr, &per_example);
  return per_example.neg_();
}

}  // namespace

TORCH_LIBRARY(uinfo_fast, m) {
  // logits [B, C] float32/64 is overwritten with (softmax - onehot) * grad_scale per probe segment
  // when write_residual; returns the NLL [B, K] of every row under every probe.
  m.def("softmax_xent_(Tensor(a!) logits, Tensor labels, Tensor probe_offsets, Tensor probe_label_col, "
        "float grad_scale, bool write_residual) -> Tensor");
  // (objective [K], grad_weight [D, C], grad_bias [C]) of mean NLL + l2/2 ||W||^2.
  m.def("probe_objective(Tensor x, Tensor labels, Tensor weight, Tensor bias, Tensor probe_offsets, "
        "Tensor probe_label_col, Tensor l2) -> (Tensor, Tensor, Tensor)");
  // log q(y_i | x_i) [N, K] under every probe.
  m.def("probe_log_likelihood(Tensor x, Tensor labels, Tensor weight, Tensor bias, Tensor probe_offsets, "
        "Tensor probe_label_col) -> Tensor");
  // (weight [D, C], bias [C], objective [K] f64, grad_max [K] f64, n_iter [K] i64, status [K] i64)
  // after batched L-BFGS; status is explained in lbfgs_fit.h.
  m.def("fit_probes(Tensor x, Tensor labels, Tensor weight, Tensor bias, Tensor probe_offsets, "
        "Tensor probe_label_col, Tensor l2, int max_iter, float tol, int history, int check_every) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(uinfo_fast, CPU, m) {
  m.impl("probe_objective", &probe_objective);
  m.impl("probe_log_likelihood", &probe_log_likelihood);
  m.impl("fit_probes", &fit_probes);
}

#ifdef UINFO_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(uinfo_fast, CUDA, m) {
  m.impl("probe_objective", &probe_objective);
  m.impl("probe_log_likelihood", &probe_log_likelihood);
  m.impl("fit_probes", &fit_probes);
}
#endif

}  // namespace uinfo_fast
