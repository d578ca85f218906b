#include "mlp_pass.h"

#include <ATen/ATen.h>

#include "probe_layout.h"

namespace uinfo_fast {
namespace {

struct MlpParts {
  at::Tensor w1, b1, w2, b2;  // views of params: [K, D, H], [K, H], [K, H, C], [K, C]
};

MlpParts parts_of(const at::Tensor& params, const MlpShape& s) {
  int64_t at_col = 0;
  auto take = [&](int64_t n) {
    at::Tensor t = params.narrow(1, at_col, n);
    at_col += n;
    return t;
  };
  MlpParts p;
  p.w1 = take(s.D * s.H).view({s.K, s.D, s.H});
  p.b1 = take(s.H);
  p.w2 = take(s.H * s.C).view({s.K, s.H, s.C});
  p.b2 = take(s.C);
  return p;
}

void check_param(const at::Tensor& t, const char* name, at::IntArrayRef shape, c10::ScalarType dtype,
                 const at::Tensor& x) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, "uinfo_fast: ", name, " must be ", dtype, " like w1, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, "uinfo_fast: ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == x.device(), "uinfo_fast: ", name, " is on ", t.device(), " but x is on ",
                    x.device(), "; every tensor of a probe op must be on one device");
}

void check_probe_vectors(const MlpSet& set, int64_t k, int64_t n_label_cols, int64_t c) {
  for (auto [t, name] : {std::pair<const at::Tensor&, const char*>{set.probe_label_col, "probe_label_col"},
                         {set.probe_classes, "probe_classes"}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, "uinfo_fast: ", name, " must be int64, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == k, "uinfo_fast: ", name, " must be [K] = [", k, "], got shape ",
                      t.sizes());
    TORCH_CHECK_VALUE(t.device() == set.x.device(), "uinfo_fast: ", name, " is on ", t.device(), " but x is on ",
                      set.x.device());
  }
  const at::Tensor cols = set.probe_label_col.cpu(), classes = set.probe_classes.cpu();
  TORCH_CHECK_VALUE(cols.min().item<int64_t>() >= 0 && cols.max().item<int64_t>() < n_label_cols,
                    "uinfo_fast: probe_label_col must lie in [0, ", n_label_cols, ") (the columns of labels)");
  TORCH_CHECK_VALUE(classes.min().item<int64_t>() >= 2 && classes.max().item<int64_t>() <= c,
                    "uinfo_fast: probe_classes must lie in [2, ", c, "] (C = w2.size(2)), got values in [",
                    classes.min().item<int64_t>(), ", ", classes.max().item<int64_t>(), "]");
  if (set.l2.defined()) {
    TORCH_CHECK_VALUE(set.l2.dim() == 1 && set.l2.size(0) == k, "uinfo_fast: l2 must be [K] = [", k,
                      "], got shape ", set.l2.sizes());
    const at::Tensor l2 = set.l2.to(at::kCPU, at::kDouble);
    TORCH_CHECK_VALUE(at::isfinite(l2).all().item<bool>() && l2.min().item<double>() >= 0,
                      "uinfo_fast: l2 must be finite and >= 0");
  }
}

// Every probe's labels in [0, its class count).
void check_mlp_labels(const MlpSet& set, const at::Tensor& labels) {
  const at::Tensor y = labels.index_select(1, set.probe_label_col);  // [N, K]
  const at::Tensor lo = std::get<0>(y.min(0)).cpu(), hi = std::get<0>(y.max(0)).cpu();
  const at::Tensor classes = set.probe_classes.cpu();
  for (int64_t k = 0; k < y.size(1); ++k)
    TORCH_CHECK_VALUE(lo[k].item<int64_t>() >= 0 && hi[k].item<int64_t>() < classes[k].item<int64_t>(),
                      "uinfo_fast: labels of probe ", k, " must lie in [0, ", classes[k].item<int64_t>(),
                      "), found values in [", lo[k].item<int64_t>(), ", ", hi[k].item<int64_t>(), "]");
}

}  // namespace

void check_mlp_args(const MlpSet& set, const at::Tensor& labels, bool check_values) {
  const at::Tensor& x = set.x;
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "uinfo_fast: x must be a floating tensor, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(0) > 0 && x.size(1) > 0, "uinfo_fast: x must be a non-empty [N, D], got "
                    "shape ", x.sizes());
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong, "uinfo_fast: labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK_VALUE(labels.dim() == 2 && labels.size(0) == x.size(0), "uinfo_fast: labels must be [N, L] with N = ",
                    x.size(0), ", got shape ", labels.sizes());
  TORCH_CHECK_VALUE(labels.device() == x.device(), "uinfo_fast: labels is on ", labels.device(), " but x is on ",
                    x.device());
  const auto dt = set.w1.scalar_type();
  TORCH_CHECK_TYPE(dt == compute_dtype(x) || dt == at::kDouble, "uinfo_fast: w1 must be ", compute_dtype(x),
                   " (or Double) for x of dtype ", x.scalar_type(), ", got ", dt);
  TORCH_CHECK_VALUE(set.w1.dim() == 3 && set.w1.size(0) > 0 && set.w1.size(1) == x.size(1) && set.w1.size(2) > 0,
                    "uinfo_fast: w1 must be [K, D, H] with K, H >= 1 and D = x.size(1) = ", x.size(1), ", got shape ",
                    set.w1.sizes());
  TORCH_CHECK_VALUE(set.w2.dim() == 3, "uinfo_fast: w2 must be [K, H, C], got shape ", set.w2.sizes());
  const int64_t k = set.w1.size(0), h = set.w1.size(2), c = set.w2.size(2);
  check_param(set.w1, "w1", set.w1.sizes(), dt, x);
  check_param(set.b1, "b1", {k, h}, dt, x);
  check_param(set.w2, "w2", {k, h, c}, dt, x);
  check_param(set.b2, "b2", {k, c}, dt, x);
  check_probe_vectors(set, k, labels.size(1), c);
  if (!check_values) return;
  check_mlp_labels(set, labels);
  TORCH_CHECK_VALUE(all_finite(x), "uinfo_fast: x holds non-finite values (NaN or inf)");
}

MlpData MlpData::select(const std::vector<int64_t>& keep, const at::Tensor& keep_t) const {
  MlpData out = *this;
  out.shape.K = keep_t.size(0);
  out.y = y.index_select(0, keep_t);
  out.minus_one = minus_one.index_select(0, keep_t);
  out.l2 = l2.index_select(0, keep_t);
  out.classes.clear();
  for (int64_t k : keep) out.classes.push_back(classes[k]);
  return out;
}

MlpData mlp_data(const MlpSet& set, const at::Tensor& labels, c10::ScalarType dtype) {
  MlpData d;
  d.shape = MlpShape{set.w1.size(0), set.w1.size(1), set.w1.size(2), set.w2.size(2)};
  d.x = set.x.to(dtype).contiguous();
  d.y = labels.index_select(1, set.probe_label_col).t().contiguous().unsqueeze(1);
  d.minus_one = at::full({d.shape.K, 1, d.x.size(0)}, -1.0, d.x.options());
  d.l2 = set.l2.defined() ? set.l2.to(at::kDouble) : at::zeros({d.shape.K}, d.x.options().dtype(at::kDouble));
  const at::Tensor cls = set.probe_classes.to(at::kCPU).contiguous();
  d.classes.assign(cls.data_ptr<int64_t>(), cls.data_ptr<int64_t>() + cls.numel());
  return d;
}

at::Tensor pack_mlp(const MlpSet& set, const MlpShape& s, c10::ScalarType dtype) {
  at::Tensor params = at::empty({s.K, s.n_params()}, set.w1.options().dtype(dtype));
  const MlpParts p = parts_of(params, s);
  const at::Tensor keep = set.probe_classes.view({s.K, 1}).gt(at::arange(s.C, set.probe_classes.options()));
  p.w1.copy_(set.w1);
  p.b1.copy_(set.b1);
  p.w2.copy_(set.w2 * keep.unsqueeze(1));
  p.b2.copy_(set.b2 * keep);
  return params;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> unpack_mlp(const at::Tensor& params, const MlpShape& s) {
  const MlpParts p = parts_of(params, s);
  return {p.w1.clone(), p.b1.clone(), p.w2.clone(), p.b2.clone()};
}

namespace {

// Probes [begin, end) of a pass, which all have `classes` classes.
struct ClassRun {
  int64_t begin = 0, end = 0, classes = 0;
};

std::vector<ClassRun> class_runs(const std::vector<int64_t>& classes) {
  std::vector<ClassRun> runs;
  for (int64_t k = 0; k < static_cast<int64_t>(classes.size()); ++k) {
    if (runs.empty() || runs.back().classes != classes[k]) runs.push_back(ClassRun{k, k, classes[k]});
    runs.back().end = k + 1;
  }
  return runs;
}

// The softmax layer of one run of probes over its own columns: their rows of `nll` [K, N]; with
// `gp`, their gradients of W2 and b2 and the gradient at their hidden units into `dz` [K, N, H].
// The logits are laid out [K, C, N], classes before rows: a softmax over a middle dimension runs
// vectorised along the rows, where one over a short last dimension (2 or 10 classes) does not.
void softmax_layer(const MlpData& d, const MlpParts& p, const at::Tensor& z, const ClassRun& r, at::Tensor& nll,
                   const MlpParts* gp, at::Tensor& dz) {
  const int64_t k0 = r.begin, kr = r.end - r.begin, c = r.classes;
  const at::Tensor w2 = p.w2.narrow(0, k0, kr).narrow(2, 0, c), zr = z.narrow(0, k0, kr);
  const at::Tensor y = d.y.narrow(0, k0, kr);
  const at::Tensor b2 = p.b2.narrow(0, k0, kr).narrow(1, 0, c).unsqueeze(2);
  const at::Tensor logp = at::log_softmax(at::baddbmm(b2, w2.transpose(1, 2), zr.transpose(1, 2)), 1);
  nll.narrow(0, k0, kr).copy_(logp.gather(1, y).squeeze(1).neg());
  if (gp == nullptr) return;
  at::Tensor g = logp.exp();  // softmax, then the residual (softmax - onehot) / N
  g.scatter_add_(1, y, d.minus_one.narrow(0, k0, kr)).div_(static_cast<double>(zr.size(1)));
  const at::Tensor l2c = d.l2.narrow(0, k0, kr).to(w2.scalar_type()).view({kr, 1, 1});
  gp->w2.narrow(0, k0, kr).narrow(2, 0, c).copy_(at::baddbmm(w2 * l2c, zr.transpose(1, 2), g.transpose(1, 2)));
  gp->b2.narrow(0, k0, kr).narrow(1, 0, c).copy_(g.sum(2));
  at::Tensor dz_run = dz.narrow(0, k0, kr);
  at::bmm_out(dz_run, g.transpose(1, 2), w2.transpose(1, 2));
}

}  // namespace

at::Tensor mlp_pass(const MlpData& d, const at::Tensor& params, at::Tensor* grad, at::Tensor* per_example) {
  const MlpShape& s = d.shape;
  const int64_t n = d.x.size(0);
  const MlpParts p = parts_of(params, s);
  // [K, N, H]: the first layers, x shared by every probe (a batch stride of 0, no copies).
  const at::Tensor z = at::baddbmm(p.b1.unsqueeze(1), d.x.expand({s.K, n, s.D}), p.w1).clamp_min_(0);
  at::Tensor nll = at::empty({s.K, n}, params.options());
  at::Tensor dz;
  MlpParts gp;
  if (grad != nullptr) {
    grad->narrow(1, s.D * s.H + s.H, s.H * s.C + s.C).zero_();  // the columns past a probe's classes
    gp = parts_of(*grad, s);
    dz = at::empty({s.K, n, s.H}, params.options());
  }
  for (const ClassRun& r : class_runs(d.classes)) softmax_layer(d, p, z, r, nll, grad == nullptr ? nullptr : &gp, dz);
  if (per_example != nullptr) *per_example = nll;
  const at::Tensor sq = p.w1.square().sum({1, 2}, false, at::kDouble) + p.w2.square().sum({1, 2}, false, at::kDouble);
  const at::Tensor f = nll.sum(1, false, at::kDouble).div_(static_cast<double>(n)).add_(d.l2 * sq * 0.5);
  if (grad == nullptr) return f;
  at::threshold_backward_out(dz, dz, z, 0);  // ReLU: no gradient where the unit was off
  gp.b1.copy_(dz.sum(1));
  const at::Tensor l2c = d.l2.to(params.scalar_type()).view({s.K, 1, 1});
  gp.w1.copy_(at::baddbmm(p.w1 * l2c, d.x.t().expand({s.K, s.D, n}), dz));
  return f;
}

namespace {

MlpShape shape_of(const MlpSet& set) {
  return MlpShape{set.w1.size(0), set.w1.size(1), set.w1.size(2), set.w2.size(2)};
}

}  // namespace

MlpGradients mlp_objective(const MlpSet& set, const at::Tensor& labels, bool check_inputs) {
  check_mlp_args(set, labels, check_inputs);
  TORCH_CHECK_VALUE(set.l2.defined(), "uinfo_fast: mlp_probe_objective needs l2");
  const auto dt = set.w1.scalar_type();
  const MlpShape s = shape_of(set);
  const MlpData d = mlp_data(set, labels, dt);
  const at::Tensor params = pack_mlp(set, s, dt);
  at::Tensor grad = at::empty_like(params);
  const at::Tensor f = mlp_pass(d, params, &grad, nullptr);
  auto [gw1, gb1, gw2, gb2] = unpack_mlp(grad, s);
  return {f, gw1, gb1, gw2, gb2};
}

at::Tensor mlp_log_likelihood(const MlpSet& set, const at::Tensor& labels, bool check_inputs) {
  check_mlp_args(set, labels, check_inputs);
  const auto dt = set.w1.scalar_type();
  const MlpShape s = shape_of(set);
  const MlpData d = mlp_data(set, labels, dt);
  at::Tensor per_example;
  mlp_pass(d, pack_mlp(set, s, dt), nullptr, &per_example);
  return per_example.t().neg().contiguous();
}

}  // namespace uinfo_fast
