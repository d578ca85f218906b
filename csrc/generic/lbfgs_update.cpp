// The device-generic ATen formulation of one L-BFGS iteration's bookkeeping (lbfgs_update.h).
// Every quantity is a tensor on the features' device, so an iteration issues no host
// synchronisation.
#include "lbfgs_update.h"

#include <ATen/ATen.h>

namespace uinfo_fast {
namespace {

// H g for every probe, H its L-BFGS inverse-Hessian estimate with H0 = gamma P, in compact form:
//   H g = gamma P g + S p + gamma (P Y) q,   q = -u,   p = R^-T ((D + gamma Y^T P Y) u - gamma b),
// with u = R^-1 a, a = S^T g, b = (P Y)^T g, R the upper triangle of S^T Y over the pairs in
// chronological order and D its diagonal. Slots are a ring buffer shared by all probes, written
// every iteration (zeros for a probe whose pair was skipped), so one order serves every probe.
at::Tensor lbfgs_direction(const FitState& st, int64_t newest, int64_t count) {
  const ProbeLayout& lay = st.layout;
  const auto dt = st.grad.scalar_type();
  at::Tensor hg = st.pgrad * per_col(st.gamma, lay, dt);
  if (count == 0) return hg;
  const int64_t m = st.hist_s.size(0), k = lay.n_probes;
  const at::Tensor order =
      at::arange(count, st.iters.options()).add_(newest - count + 1 + m).remainder_(m);  // oldest first
  const at::Tensor a = seg_dots(st.hist_s, st.grad, lay).index_select(0, order).t().unsqueeze(-1);   // [K, c, 1]
  const at::Tensor b = seg_dots(st.hist_py, st.grad, lay).index_select(0, order).t().unsqueeze(-1);  // [K, c, 1]
  auto chrono = [&](const at::Tensor& gram) {  // [m, m, K] by slot -> [K, c, c] chronological
    return gram.index_select(0, order).index_select(1, order).permute({2, 0, 1});
  };
  const at::Tensor sy = chrono(st.sy), ypy = chrono(st.ypy);
  const at::Tensor diag = sy.diagonal(0, 1, 2);  // [K, c]
  // A skipped pair is all zeros; a unit diagonal there decouples it, and its coefficients
  // then multiply zero vectors.
  const at::Tensor r = sy.triu() + at::diag_embed(diag.le(0).to(at::kDouble));
  const at::Tensor gamma = st.gamma.view({k, 1, 1});
  const at::Tensor u = at::linalg_solve_triangular(r, a, /*upper=*/true);
  const at::Tensor w = diag.unsqueeze(-1) * u + gamma * (at::bmm(ypy, u) - b);
  const at::Tensor p = at::linalg_solve_triangular(r.mT(), w, /*upper=*/false);
  auto by_slot = [&](const at::Tensor& coef) {  // [K, c, 1] -> [m, 1, C] in the compute dtype
    const at::Tensor slots = at::zeros({m, k}, coef.options()).index_copy_(0, order, coef.squeeze(-1).t());
    return slots.index_select(1, lay.col2probe).to(dt).unsqueeze(1);
  };
  hg.add_((st.hist_s * by_slot(p)).sum(0));
  hg.sub_((st.hist_py * by_slot(gamma * u)).sum(0));
  return hg;
}

// The pair (s, y, P y) of the probes whose step was accepted (`ok`, per column `ok_cols`) into
// slot `newest`, with its row and column of the Gram matrices and the new H0 scale; zeros for
// every other probe.
void store_pair(FitState& st, const at::Tensor& trial, const at::Tensor& grad_trial, const at::Tensor& pgrad_trial,
                const at::Tensor& ok, const at::Tensor& ok_cols, int64_t newest) {
  const ProbeLayout& lay = st.layout;
  const auto dt = st.params.scalar_type();
  const at::Tensor ok_mask = ok_cols.to(dt);
  const at::Tensor s = (trial - st.params) * ok_mask;
  const at::Tensor y = (grad_trial - st.grad) * ok_mask;
  const at::Tensor py = (pgrad_trial - st.pgrad) * ok_mask;
  const at::Tensor sy = seg_dot(s, y, lay), yy = seg_dot(y, py, lay);
  // Convexity makes s.y >= 0; a pair with no curvature left (rounding) is skipped, not stored.
  const at::Tensor valid = ok & sy.gt(1e-10 * yy) & yy.gt(0);
  const at::Tensor valid_mask = per_col(valid, lay, dt);
  st.hist_s[newest].copy_(s * valid_mask);
  st.hist_y[newest].copy_(y * valid_mask);
  st.hist_py[newest].copy_(py * valid_mask);
  // P is symmetric, so is Y^T P Y: one product gives the new row and column.
  st.sy.select(0, newest).copy_(seg_dots(st.hist_y, st.hist_s[newest], lay));
  st.sy.select(1, newest).copy_(seg_dots(st.hist_s, st.hist_y[newest], lay));
  const at::Tensor ypy_new = seg_dots(st.hist_py, st.hist_y[newest], lay);
  st.ypy.select(0, newest).copy_(ypy_new);
  st.ypy.select(1, newest).copy_(ypy_new);
  st.gamma = at::where(valid, sy / yy, st.gamma);
}

// Rejected steps shrink to the minimiser of the quadratic through f, f'(0) and f(t), kept
// within [0.1 t, 0.5 t]; a trial with a non-finite objective shrinks tenfold.
void next_step_sizes(FitState& st, const at::Tensor& f_trial, const at::Tensor& active, const at::Tensor& t_act,
                     const at::Tensor& ok) {
  const at::Tensor curv = 2 * (f_trial - st.f - st.gd * t_act);
  const at::Tensor t_quad = at::where(curv.gt(0) & f_trial.isfinite(),
                                      (-st.gd * t_act * t_act / curv).clamp(0.1 * t_act, 0.5 * t_act),
                                      0.1 * t_act);
  st.t = at::where(ok, at::ones_like(st.t), at::where(active, t_quad, st.t));
  st.fails = at::where(ok, at::zeros_like(st.fails), st.fails + active.to(at::kLong));
  st.iters.add_(active.to(at::kLong));
}

// Objective, max |gradient|, flat counter and status after the accepted trials moved in.
void update_status(FitState& st, const at::Tensor& f_trial, const at::Tensor& active, const at::Tensor& ok,
                   double ftol) {
  // A trial whose objective differs from f only at the rounding level counts towards "flat"
  // whether or not Armijo accepted it: near the optimum the float32 logits make f noisy, and
  // a search that keeps rejecting such steps has converged, not failed.
  const at::Tensor rel_change =
      (st.f - f_trial).abs() / at::maximum(at::maximum(st.f.abs(), f_trial.abs()), at::ones_like(st.f));
  const at::Tensor at_rounding = active & f_trial.isfinite() & rel_change.le(ftol);
  st.flat = at::where(at_rounding, st.flat + 1, at::where(ok, at::zeros_like(st.flat), st.flat));
  st.f = at::where(ok, f_trial, st.f);
  st.gmax = seg_absmax(st.grad, st.layout);
  const at::Tensor converged = active & st.gmax.le(st.tol);
  const at::Tensor flat = active & converged.logical_not() & st.flat.ge(kMaxFlat);
  const at::Tensor failed = active & (converged | flat).logical_not() & st.fails.ge(kMaxFails);
  st.status = at::where(converged, 1, at::where(flat, 2, at::where(failed, 3, st.status)));
  st.done = st.done | converged | flat | failed;
}

// New quasi-Newton direction for the probes that moved; the preconditioned gradient step if it
// is not a descent direction (lost positive definiteness through rounding).
void next_direction(FitState& st, const at::Tensor& ok, const at::Tensor& ok_cols, int64_t newest, int64_t count) {
  const ProbeLayout& lay = st.layout;
  at::Tensor dir = lbfgs_direction(st, newest, count).neg_();
  at::Tensor gd = seg_dot(st.grad, dir, lay);
  const at::Tensor descent = gd.lt(0);
  dir = at::where(per_col(descent, lay, at::kBool), dir, st.pgrad.neg());
  gd = at::where(descent, gd, seg_dot(st.grad, st.pgrad, lay).neg_());
  st.dir = at::where(ok_cols, dir, st.dir);
  st.gd = at::where(ok, gd, st.gd);
}

}  // namespace

void lbfgs_update_generic(FitState& st, const at::Tensor& trial, const at::Tensor& grad_trial,
                          const at::Tensor& pgrad_trial, const at::Tensor& f_trial, int64_t newest, int64_t count,
                          double ftol) {
  // The trial was taken at step t from every probe still running (see evaluate_trial in lbfgs_fit.cpp).
  const at::Tensor active = st.done.logical_not();
  const at::Tensor t_act = st.t * active;
  const at::Tensor ok = active & f_trial.isfinite() & f_trial.le(st.f + kArmijo * t_act * st.gd);
  const at::Tensor ok_cols = per_col(ok, st.layout, at::kBool);
  store_pair(st, trial, grad_trial, pgrad_trial, ok, ok_cols, newest);
  next_step_sizes(st, f_trial, active, t_act, ok);
  st.params = at::where(ok_cols, trial, st.params);
  st.grad = at::where(ok_cols, grad_trial, st.grad);
  st.pgrad = at::where(ok_cols, pgrad_trial, st.pgrad);
  update_status(st, f_trial, active, ok, ftol);
  next_direction(st, ok, ok_cols, newest, count);
}

}  // namespace uinfo_fast
