// Batched L-BFGS for the one-hidden-layer probes (mlp_probes.h).
//
// Every probe is one row of params [K, P] with its own history (a ring of `history` (s, y)
// pairs, [K, m, P], and its own position in it), step and Armijo backtracking line search. An
// iteration evaluates one trial point for every running probe in one pass and takes every
// decision as a tensor expression on the device: directions in the compact form, a few batched
// products over the histories. The host looks every `check_every` iterations and drops
// the finished probes' rows. A network's objective is not convex, so a pair whose curvature
// <s, y> is not positive is not stored, and a direction that is not a descent restarts the probe
// from steepest descent with an empty history.
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "lbfgs_state.h"
#include "lockstep.h"
#include "mlp_pass.h"
#include "mlp_probes.h"

namespace uinfo_fast {
namespace {

at::Tensor rowdot(const at::Tensor& a, const at::Tensor& b) { return (a * b).sum(1, false, at::kDouble); }

at::Tensor col(const at::Tensor& v, c10::ScalarType dt) { return v.to(dt).unsqueeze(1); }

// A first step of length at most 1 along -grad (scipy's L-BFGS-B starts the same way).
at::Tensor first_step(const at::Tensor& grad) {
  return at::clamp_max(grad.to(at::kDouble).norm(2, {1}).clamp_min(1e-300).reciprocal(), 1.0);
}

struct MlpFitState {
  MlpData data;
  std::vector<int64_t> ids;  // original index of each running probe
  at::Tensor params, grad, dir;  // [Ka, P]
  at::Tensor s_hist, y_hist;     // [Ka, m, P]
  at::Tensor filled;             // [Ka, m] float64: 1 where a slot holds a pair of the probe's current history
  at::Tensor next;               // [Ka] int64: the slot the next pair goes to
  at::Tensor f, gd, t, gamma, gmax, tol;  // [Ka] float64
  at::Tensor f_past;                      // [Ka, kSlowWindow] float64: f after each of the last iterations
  at::Tensor done;                        // [Ka] bool
  at::Tensor fails, flat, iters, status;  // [Ka] int64

  MlpFitState select(const std::vector<int64_t>& keep) const {
    const at::Tensor k = at::tensor(keep, at::TensorOptions().dtype(at::kLong)).to(params.device());
    MlpFitState out;
    out.data = data.select(keep, k);
    for (int64_t i : keep) out.ids.push_back(ids[i]);
    for (auto [dst, src] : {std::pair<at::Tensor*, const at::Tensor*>{&out.params, &params}, {&out.grad, &grad},
                            {&out.dir, &dir}, {&out.s_hist, &s_hist}, {&out.y_hist, &y_hist}, {&out.filled, &filled},
                            {&out.next, &next}, {&out.f, &f}, {&out.gd, &gd}, {&out.t, &t}, {&out.gamma, &gamma},
                            {&out.gmax, &gmax}, {&out.tol, &tol}, {&out.f_past, &f_past}, {&out.done, &done}, {&out.fails, &fails},
                            {&out.flat, &flat}, {&out.iters, &iters}, {&out.status, &status}})
      *dst = src->index_select(0, k);
    return out;
  }
};

// The L-BFGS direction -H grad of every probe from its own history, H0 = gamma I, in compact form
// (Byrd, Nocedal & Schnabel 1994; lbfgs_update.cpp writes it out): H g = gamma g + S p - gamma Y u,
// u = R^-1 a, p = R^-T ((D + gamma Y^T Y) u - gamma b), a = S^T g, b = Y^T g, R the upper triangle
// of S^T Y over the pairs in chronological order, D its diagonal. A handful of batched products
// over the history, where the two-loop recursion makes 4m passes of several operators each (which
// on a probe set of a thousand rows cost more than the pass). Each probe's ring is put in
// chronological order (oldest first, from its `next` slot) in the small matrices only; an empty
// slot counts as a zero pair (its rows and columns of the small matrices zeroed), which a unit
// diagonal decouples.
at::Tensor lbfgs_direction(const MlpFitState& st) {
  const int64_t k = st.next.size(0), m = st.s_hist.size(1);
  const auto dt = st.grad.scalar_type();
  const at::Tensor order = (st.next.unsqueeze(1) + at::arange(m, st.next.options())).remainder_(m);  // [K, m]
  const at::Tensor filled = st.filled.gather(1, order).unsqueeze(2);  // [K, m, 1] chronological
  auto chrono_vec = [&](const at::Tensor& v) {  // [K, m, 1] by slot -> chronological, float64
    return v.to(at::kDouble).gather(1, order.unsqueeze(2)) * filled;
  };
  auto chrono_mat = [&](const at::Tensor& gram) {  // [K, m, m] by slot -> chronological, float64
    const at::Tensor rows = gram.to(at::kDouble).gather(1, order.unsqueeze(2).expand({k, m, m}));
    return rows.gather(2, order.unsqueeze(1).expand({k, m, m})) * filled * filled.transpose(1, 2);
  };
  const at::Tensor g = st.grad.unsqueeze(2);
  const at::Tensor a = chrono_vec(at::bmm(st.s_hist, g)), b = chrono_vec(at::bmm(st.y_hist, g));
  const at::Tensor sy = chrono_mat(at::bmm(st.s_hist, st.y_hist.transpose(1, 2)));
  const at::Tensor yy = chrono_mat(at::bmm(st.y_hist, st.y_hist.transpose(1, 2)));
  const at::Tensor diag = sy.diagonal(0, 1, 2);
  const at::Tensor r = sy.triu() + at::diag_embed(diag.le(0).to(at::kDouble));
  const at::Tensor gamma = st.gamma.view({k, 1, 1});
  const at::Tensor u = at::linalg_solve_triangular(r, a, /*upper=*/true);
  const at::Tensor p = at::linalg_solve_triangular(r.mT(), diag.unsqueeze(2) * u + gamma * (at::bmm(yy, u) - b),
                                                   /*upper=*/false);
  auto by_slot = [&](const at::Tensor& coef) {  // [K, m, 1] chronological -> [K, 1, m] by slot
    return at::zeros_like(coef).scatter_(1, order.unsqueeze(2), coef).to(dt).transpose(1, 2);
  };
  at::Tensor hg = st.grad * col(st.gamma, dt);
  hg.add_(at::bmm(by_slot(p), st.s_hist).squeeze(1)).sub_(at::bmm(by_slot(gamma * u), st.y_hist).squeeze(1));
  return hg.neg_();
}

// Stores (s, y) of the probes in `store` in their next slot; the others keep their history.
void push_pairs(MlpFitState& st, const at::Tensor& store, const at::Tensor& s, const at::Tensor& y) {
  const at::Tensor rows = at::arange(st.next.size(0), st.next.options());
  const at::Tensor keep = store.unsqueeze(1);
  st.s_hist.index_put_({rows, st.next}, at::where(keep, s, st.s_hist.index({rows, st.next})));
  st.y_hist.index_put_({rows, st.next}, at::where(keep, y, st.y_hist.index({rows, st.next})));
  const at::Tensor slot = st.next.unsqueeze(1);
  st.filled.scatter_(1, slot, at::where(keep, 1.0, st.filled.gather(1, slot)));
  st.next = at::where(store, (st.next + 1).remainder(st.s_hist.size(1)), st.next);
}

// The next direction of the probes that moved; a probe whose direction is no descent restarts
// from steepest descent with an empty history.
void next_direction(MlpFitState& st, const at::Tensor& moved) {
  const at::Tensor fresh = lbfgs_direction(st);
  st.dir = at::where(col(moved, at::kBool), fresh, st.dir);
  st.gd = at::where(moved, rowdot(st.grad, st.dir), st.gd);
  const at::Tensor restart = moved.logical_and(st.gd.ge(0));
  st.filled.masked_fill_(restart.unsqueeze(1), 0.0);
  st.gamma.masked_fill_(restart, 1.0);
  st.dir = at::where(col(restart, at::kBool), st.grad.neg(), st.dir);
  st.gd = at::where(restart, rowdot(st.grad, st.dir), st.gd);
  st.t = at::where(restart, first_step(st.grad), st.t);
}

// One iteration: a trial point for every running probe, accepted where it decreases the
// objective enough (Armijo), else the step shrinks (safeguarded quadratic interpolation).
// Whether each probe's objective fell by under ftol (relative) over the last kSlowWindow
// iterations; records this iteration's objective in its slot of the window.
at::Tensor slow_progress(MlpFitState& st, double ftol) {
  const at::Tensor slot = st.iters.remainder(kSlowWindow).unsqueeze(1);
  const at::Tensor before = st.f_past.gather(1, slot).squeeze(1);  // inf until the window is full
  st.f_past.scatter_(1, slot, st.f.unsqueeze(1));
  return (before - st.f).le(ftol * st.f.abs()).logical_and(at::isfinite(before));
}

void iterate(MlpFitState& st, double ftol, double slow_ftol) {
  const auto dt = st.params.scalar_type();
  const at::Tensor running = st.done.logical_not();
  const at::Tensor t_act = st.t * running;
  const at::Tensor trial = st.params + st.dir * col(t_act, dt);
  at::Tensor g_trial = at::empty_like(trial);
  const at::Tensor f_trial = mlp_pass(st.data, trial, &g_trial, nullptr);
  const at::Tensor decrease = f_trial - st.f;
  const at::Tensor accept =
      running.logical_and(at::isfinite(f_trial)).logical_and(decrease.le(kArmijo * t_act * st.gd));
  const at::Tensor tiny = decrease.abs().le(ftol * st.f.abs().clamp_min(1e-300));
  st.flat = at::where(accept.logical_and(tiny.logical_not()), at::zeros_like(st.flat),
                      st.flat + running.logical_and(tiny).to(at::kLong));
  const at::Tensor s = st.dir * col(t_act, dt), y = g_trial - st.grad;
  const at::Tensor sy = rowdot(s, y), yy = rowdot(y, y);
  const at::Tensor store = accept.logical_and(sy.gt(1e-10 * yy)).logical_and(yy.gt(0));
  push_pairs(st, store, s, y);
  st.gamma = at::where(store, sy / yy, st.gamma);
  const at::Tensor acc_col = col(accept, at::kBool);
  st.params = at::where(acc_col, trial, st.params);
  st.grad = at::where(acc_col, g_trial, st.grad);
  st.f = at::where(accept, f_trial, st.f);
  st.fails = at::where(accept, at::zeros_like(st.fails), st.fails + running.to(at::kLong));
  // The minimiser of the quadratic through f, its slope and the trial, kept in [0.1 t, 0.5 t].
  const at::Tensor curv = (decrease - st.gd * t_act) * 2.0;
  const at::Tensor ratio = at::where(at::isfinite(curv).logical_and(curv.gt(0)), -st.gd * t_act / curv,
                                     at::full_like(curv, 0.1));
  st.t = at::where(accept, at::ones_like(st.t), st.t * ratio.clamp(0.1, 0.5));
  st.iters = st.iters + running.to(at::kLong);
  st.gmax = st.grad.abs().amax(1).to(at::kDouble);
  const at::Tensor conv = st.gmax.le(st.tol), flat = st.flat.ge(kMaxFlat), stalled = st.fails.ge(kMaxFails);
  const at::Tensor slow = slow_ftol > 0 ? slow_progress(st, slow_ftol) : at::zeros_like(conv);
  at::Tensor code = at::zeros_like(st.status);
  code.masked_fill_(stalled, 3).masked_fill_(slow, 4).masked_fill_(flat, 2).masked_fill_(conv, 1);
  st.status = at::where(running, code, st.status);
  st.done = st.done.logical_or(conv).logical_or(flat).logical_or(stalled).logical_or(slow);
  next_direction(st, accept.logical_and(st.done.logical_not()));
}

MlpFitState initial_state(const MlpSet& set, const at::Tensor& labels, double tol, int64_t history) {
  const auto dt = set.w1.scalar_type();
  MlpFitState st;
  st.data = mlp_data(set, labels, dt);
  const MlpShape& s = st.data.shape;
  for (int64_t k = 0; k < s.K; ++k) st.ids.push_back(k);
  st.params = pack_mlp(set, s, dt);
  st.grad = at::empty_like(st.params);
  st.f = mlp_pass(st.data, st.params, &st.grad, nullptr);
  const auto dbl = st.f.options();
  st.gmax = st.grad.abs().amax(1).to(at::kDouble);
  st.tol = at::full({s.K}, tol, dbl);
  st.done = st.gmax.le(st.tol);
  st.status = st.done.to(at::kLong);
  st.dir = st.grad.neg();
  st.gd = rowdot(st.grad, st.dir);
  st.t = first_step(st.grad);
  st.gamma = at::ones({s.K}, dbl);
  st.s_hist = at::zeros({s.K, history, s.n_params()}, st.params.options());
  st.y_hist = at::zeros_like(st.s_hist);
  st.filled = at::zeros({s.K, history}, dbl);
  st.f_past = at::full({s.K, kSlowWindow}, std::numeric_limits<double>::infinity(), dbl);
  st.next = at::zeros({s.K}, st.status.options());
  st.fails = at::zeros_like(st.status);
  st.flat = at::zeros_like(st.status);
  st.iters = at::zeros_like(st.status);
  return st;
}

// Every probe's outcome, written back as finished probes leave the running set.
struct MlpOutputs {
  MlpShape shape;
  at::Tensor params, f, gmax, iters, status;

  explicit MlpOutputs(const MlpFitState& st) : shape(st.data.shape), params(st.params.clone()) {
    f = st.f.clone();
    gmax = st.gmax.clone();
    iters = st.iters.clone();
    status = st.status.clone();
  }

  void write_back(const MlpFitState& st) {
    const at::Tensor ids = at::tensor(st.ids, at::TensorOptions().dtype(at::kLong)).to(params.device());
    params.index_copy_(0, ids, st.params);
    f.index_copy_(0, ids, st.f);
    gmax.index_copy_(0, ids, st.gmax);
    iters.index_copy_(0, ids, st.iters);
    status.index_copy_(0, ids, st.status);
  }

  MlpFitResult result() const {
    auto [w1, b1, w2, b2] = unpack_mlp(params, shape);
    return {w1, b1, w2, b2, f, gmax, iters, status};
  }
};

struct MlpSetFit {
  MlpOutputs out;
  MlpFitState st;
  bool running = true;
};

// Drops the finished probes (`done`: the fit's flags on the host) from a fit's running state,
// their results into its outputs. Returns false when none is left.
bool compact(MlpSetFit& f, const bool* done) {
  std::vector<int64_t> keep;
  for (size_t k = 0; k < f.st.ids.size(); ++k)
    if (!done[k]) keep.push_back(static_cast<int64_t>(k));
  if (keep.size() < f.st.ids.size()) f.out.write_back(f.st);
  if (!keep.empty() && keep.size() < f.st.ids.size()) f.st = f.st.select(keep);
  return !keep.empty();
}

}  // namespace

std::vector<MlpFitResult> fit_mlp_probe_sets(const std::vector<MlpSet>& sets, const at::Tensor& labels,
                                             int64_t max_iter, double tol, int64_t history, int64_t check_every,
                                             bool check_inputs, double ftol) {
  TORCH_CHECK_VALUE(!sets.empty(), "uinfo_fast: fit_mlp_probes needs at least one feature set");
  TORCH_CHECK_VALUE(max_iter >= 0, "uinfo_fast: max_iter must be >= 0, got ", max_iter);
  TORCH_CHECK_VALUE(tol > 0, "uinfo_fast: tol must be > 0, got ", tol);
  TORCH_CHECK_VALUE(history >= 1, "uinfo_fast: history must be >= 1, got ", history);
  TORCH_CHECK_VALUE(check_every >= 1, "uinfo_fast: check_every must be >= 1, got ", check_every);
  TORCH_CHECK_VALUE(ftol >= 0 && ftol < 1, "uinfo_fast: ftol must lie in [0, 1), got ", ftol);
  std::vector<MlpSetFit> fits;
  for (const MlpSet& set : sets) {
    check_mlp_args(set, labels, check_inputs);
    TORCH_CHECK_VALUE(set.l2.defined(), "uinfo_fast: fit_mlp_probes needs l2");
    MlpFitState st = initial_state(set, labels.contiguous(), tol, history);
    MlpOutputs out(st);
    fits.push_back(MlpSetFit{std::move(out), std::move(st)});
  }
  const double eps = sets[0].w1.scalar_type() == at::kDouble ? 2.220446049250313e-16 : 1.1920928955078125e-07;
  for (int64_t it = 0; it < max_iter;) {
    if (!check_all(fits, [](const MlpSetFit& f) { return f.st.done; }, compact)) break;
    const int64_t round = std::min(check_every, max_iter - it);
    for (MlpSetFit& f : fits)
      if (f.running)
        for (int64_t j = 0; j < round; ++j) iterate(f.st, eps, ftol);
    it += round;
  }
  std::vector<MlpFitResult> out;
  for (MlpSetFit& f : fits) {
    if (f.running) f.out.write_back(f.st);
    out.push_back(f.out.result());
  }
  return out;
}

}  // namespace uinfo_fast
