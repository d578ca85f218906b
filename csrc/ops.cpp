// The schemas of the uinfo_fast ops. The Python side (uinfo_fast/engine/extension.py) registers fake kernels
// and autograd against them; cpu/ and cuda/ register each device's kernels.
#include <Python.h>

#include <torch/library.h>

// The extension is loaded as a Python module only to run the static registrations.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(uinfo_fast, m) {
  // logits [B, C] float32/64 is overwritten with (softmax - onehot) * grad_scale per probe segment
  // when write_residual; returns the NLL [B, K] of every row under every probe.
  m.def("softmax_xent_(Tensor(a!) logits, Tensor labels, Tensor probe_offsets, Tensor probe_label_col, "
        "float grad_scale, bool write_residual) -> Tensor");
  // The ops below always check shapes, dtypes, devices and the probe layout. With check_inputs
  // (the default) they also check that labels lie in range and x is finite, passes over the data
  // that a caller who validated its inputs once (the Python API) turns off.
  //
  // (objective [K], grad_weight [D, C], grad_bias [C]) of mean NLL + l2/2 ||W||^2.
  m.def("probe_objective(Tensor x, Tensor labels, Tensor weight, Tensor bias, Tensor probe_offsets, "
        "Tensor probe_label_col, Tensor l2, bool check_inputs=True) -> (Tensor, Tensor, Tensor)");
  // log q(y_i | x_i) [N, K] under every probe.
  m.def("probe_log_likelihood(Tensor x, Tensor labels, Tensor weight, Tensor bias, Tensor probe_offsets, "
        "Tensor probe_label_col, bool check_inputs=True) -> Tensor");
  // Batched L-BFGS for the probes of several feature sets at once (layers of different widths,
  // the same rows and labels [N, L]): every list holds one entry per feature set s, x[s] [N, D_s]
  // and its probes' starting weight [D_s, C_s], bias [C_s], offsets [K_s+1], label columns [K_s]
  // and penalties [K_s]. Returns, per set, (weight, bias, objective [K_s] f64, grad_max [K_s] f64,
  // n_iter [K_s] i64, status [K_s] i64); status is explained in generic/lbfgs_fit.h. A probe
  // converges when max |gradient| <= tol and, given l2_tol, <= l2_tol * its penalty. schedule
  // "batched" fits every probe at once; "path" one distinct penalty at a time, from the largest
  // down, each stage started from the secant through the solutions of the two before it. Then
  // the polish: per set, the probes listed in polish[s] are fitted on in float64 until max
  // |gradient| <= min(tol, polish_l2_tol * penalty), their iterations added to n_iter.
  m.def("fit_probes(Tensor[] x, Tensor labels, Tensor[] weight, Tensor[] bias, Tensor[] probe_offsets, "
        "Tensor[] probe_label_col, Tensor[] l2, int max_iter, float tol, int history, int check_every, "
        "bool check_inputs=True, float? l2_tol=None, str schedule=\"batched\", Tensor[]? polish=None, "
        "float? polish_l2_tol=None) "
        "-> (Tensor[], Tensor[], Tensor[], Tensor[], Tensor[], Tensor[])");
  // One-hidden-layer probes (generic/mlp_probes.h): per feature set, x [N, D] and its K probes'
  // w1 [K, D, H], b1 [K, H], w2 [K, H, C], b2 [K, C]; probe k predicts label column
  // probe_label_col[k] with its first probe_classes[k] classes; objective mean NLL
  // + l2/2 (||W1||^2 + ||W2||^2), biases not penalised.
  //
  // (objective [K] f64, grad w1, grad b1, grad w2, grad b2).
  m.def("mlp_probe_objective(Tensor x, Tensor labels, Tensor w1, Tensor b1, Tensor w2, Tensor b2, "
        "Tensor probe_label_col, Tensor probe_classes, Tensor l2, bool check_inputs=True) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // log q_k(y_i | x_i) [N, K].
  m.def("mlp_probe_log_likelihood(Tensor x, Tensor labels, Tensor w1, Tensor b1, Tensor w2, Tensor b2, "
        "Tensor probe_label_col, Tensor probe_classes, bool check_inputs=True) -> Tensor");
  // Batched L-BFGS over the probes of several feature sets (one list entry per set). Returns, per
  // set, (w1, b1, w2, b2, objective [K] f64, grad_max [K] f64, n_iter [K] i64, status [K] i64),
  // status as fit_probes', and 4 when ftol > 0 and the objective fell by under ftol (relative)
  // over the last 20 iterations (generic/mlp_probes.h).
  m.def("fit_mlp_probes(Tensor[] x, Tensor labels, Tensor[] w1, Tensor[] b1, Tensor[] w2, Tensor[] b2, "
        "Tensor[] probe_label_col, Tensor[] probe_classes, Tensor[] l2, int max_iter, float tol, int history, "
        "int check_every, bool check_inputs=True, float ftol=0.0) "
        "-> (Tensor[], Tensor[], Tensor[], Tensor[], Tensor[], Tensor[], Tensor[], Tensor[])");
}
