// Batched, preconditioned L-BFGS with a per-probe backtracking line search.
//
// The initial inverse Hessian of every probe is gamma * P, with P the inverse of Boehning's
// curvature bound of the softmax loss, 1/2 E[x~ x~^T] + l2 (x~ = [x, 1]; the bias is not
// penalised). The bound captures the correlations between features, which is what makes plain
// (identity-scaled) L-BFGS slow on network features; it is one (D+1)^2 solve per distinct
// penalty, and applying it costs (D+1)^2 C per iteration against N D C for a pass.
//
// Directions come from the compact representation of L-BFGS (Byrd, Nocedal & Schnabel 1994)
// rather than the two-loop recursion: the recursion's 2m dependent steps are 2m tiny ATen calls
// each, while the compact form needs a fixed handful of batched ones (per-probe Gram matrices of
// the history, kept up to date one row and column per iteration, and two small triangular solves).
//
// The per-iteration bookkeeping after the pass (acceptance, history, step sizes, status, the next
// direction) is written three times with one semantics: as ATen tensor expressions here (device
// generic, the reference the tests hold the others to), as one fused loop per probe on the CPU
// (cpu/lbfgs_update_cpu.cpp) and as three launches on CUDA (cuda/lbfgs_update_cuda.cu): the ~300
// small operator calls of the ATen form cost more than a pass on small problems, and on a GPU
// their launch overhead alone rivals a full-size pass.
//
// Every probe has its own step, history and stopping state, yet one pass over the features
// evaluates all of them. Acceptance, step sizes and directions are tensors on the features'
// device, so an iteration issues no host synchronisation; the host looks only every
// `check_every` iterations, to stop early and to drop finished probes from the pass
// (compaction), which keeps the matrix products as narrow as the unfinished probes.
#include "lbfgs_fit.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "backend.h"
#include "lbfgs_state.h"
#include "probe_layout.h"
#include "probe_pass.h"

namespace uinfo_fast {
namespace {

// Column lists of each preconditioner among the running probes.
void build_groups(FitState& st, int64_t n_groups) {
  std::vector<std::vector<int64_t>> probes(n_groups);
  for (int64_t k = 0; k < st.layout.n_probes; ++k) probes[st.group[k]].push_back(k);
  st.group_cols.assign(n_groups, at::Tensor());
  for (int64_t g = 0; g < n_groups; ++g)
    if (!probes[g].empty()) st.group_cols[g] = st.layout.columns_of(probes[g]);
}

// P_g q for every column, with the preconditioner of that column's penalty.
at::Tensor precondition(const at::Tensor& precond,  // [G, D+1, D+1]
                        const FitState& st, const at::Tensor& q) {
  const int64_t n_cols = q.size(1);
  for (size_t g = 0; g < st.group_cols.size(); ++g)
    if (st.group_cols[g].defined() && st.group_cols[g].size(0) == n_cols) return at::mm(precond[g], q);
  at::Tensor out = at::empty_like(q);
  for (size_t g = 0; g < st.group_cols.size(); ++g)
    if (st.group_cols[g].defined())
      out.index_copy_(1, st.group_cols[g], at::mm(precond[g], q.index_select(1, st.group_cols[g])));
  return out;
}

// Inverses of Boehning's bound 1/2 E[x~ x~^T] + diag(l2, ..., l2, 0), one per distinct penalty.
at::Tensor make_preconditioners(const at::Tensor& x, const std::vector<double>& penalties, c10::ScalarType dt) {
  const int64_t n = x.size(0), d = x.size(1);
  // The second moment in the compute dtype (a preconditioner needs no more than float32, and a
  // float64 product costs as much as several passes on a CPU), inverted in float64.
  const at::Tensor xw = x.scalar_type() == dt ? x : x.to(dt);
  at::Tensor moment = at::empty({d + 1, d + 1}, x.options().dtype(dt));
  moment.narrow(0, 0, d).narrow(1, 0, d).copy_(at::mm(xw.t(), xw));
  const at::Tensor col_sum = xw.sum(0);
  moment.narrow(0, d, 1).narrow(1, 0, d).copy_(col_sum.unsqueeze(0));
  moment.narrow(0, 0, d).narrow(1, d, 1).copy_(col_sum.unsqueeze(1));
  moment.select(0, d).select(0, d).fill_(static_cast<double>(n));
  moment = moment.to(at::kDouble);
  moment.div_(static_cast<double>(n)).mul_(0.5);
  // A little ridge keeps the bound invertible for constant or duplicated features at l2 = 0.
  const double jitter = 1e-8 * std::max(1.0, moment.diagonal().mean().item<double>());
  std::vector<at::Tensor> out;
  for (double l2 : penalties) {
    at::Tensor ridge = at::full({d + 1}, l2 + jitter, moment.options());
    ridge[d] = jitter;
    out.push_back(at::linalg_inv(moment + at::diag(ridge)));
  }
  return at::stack(out).to(dt);
}

// Column sums run in the compute dtype (ATen's cascade summation keeps float32 accurate over
// D+1 terms) and only the [C] or [m, C] results are widened: a float64 sum would first copy the
// whole product to float64.
at::Tensor seg_dot(const at::Tensor& a, const at::Tensor& b, const ProbeLayout& layout) {
  return segment_sum((a * b).sum(0).to(at::kDouble), layout);
}

// <a_i, v> per probe for every slot i of a history a [m, D+1, C]: [m, K] float64.
at::Tensor seg_dots(const at::Tensor& a, const at::Tensor& v, const ProbeLayout& layout) {
  const at::Tensor per_col = (a * v).sum(1).to(at::kDouble);  // [m, C]
  return at::zeros({a.size(0), layout.n_probes}, per_col.options()).index_add_(1, layout.col2probe, per_col);
}

at::Tensor seg_absmax(const at::Tensor& a, const ProbeLayout& layout) {
  const at::Tensor col_max = a.abs().amax(0).to(at::kDouble);
  return at::zeros({layout.n_probes}, col_max.options()).scatter_reduce_(0, layout.col2probe, col_max, "amax");
}

// Per-probe values [K] spread over that probe's columns, [C], in dtype `dt`.
at::Tensor per_col(const at::Tensor& v, const ProbeLayout& layout, c10::ScalarType dt) {
  return v.index_select(0, layout.col2probe).to(dt);
}

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

FitState select_probes(const FitState& st, const std::vector<int64_t>& keep) {
  const at::Tensor probes = at::tensor(keep, at::TensorOptions().dtype(at::kLong)).to(st.f.device());
  const at::Tensor cols = st.layout.columns_of(keep);
  FitState out;
  out.layout = st.layout.select(keep);
  for (int64_t k : keep) out.ids.push_back(st.ids[k]);
  out.orig_cols = st.orig_cols.index_select(0, cols);
  out.params = st.params.index_select(1, cols);
  out.grad = st.grad.index_select(1, cols);
  out.pgrad = st.pgrad.index_select(1, cols);
  out.dir = st.dir.index_select(1, cols);
  out.hist_s = st.hist_s.index_select(2, cols);
  out.hist_y = st.hist_y.index_select(2, cols);
  out.hist_py = st.hist_py.index_select(2, cols);
  out.sy = st.sy.index_select(2, probes);
  out.ypy = st.ypy.index_select(2, probes);
  for (int64_t k : keep) out.group.push_back(st.group[k]);
  build_groups(out, static_cast<int64_t>(st.group_cols.size()));
  for (auto [dst, src] : {std::pair<at::Tensor*, const at::Tensor*>{&out.l2, &st.l2}, {&out.f, &st.f},
                          {&out.gd, &st.gd}, {&out.t, &st.t}, {&out.gamma, &st.gamma}, {&out.gmax, &st.gmax},
                          {&out.done, &st.done}, {&out.fails, &st.fails}, {&out.flat, &st.flat},
                          {&out.iters, &st.iters}, {&out.status, &st.status}})
    *dst = src->index_select(0, probes);
  return out;
}

}  // namespace

FitResult fit_probes(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& weight, const at::Tensor& bias,
                     const at::Tensor& probe_offsets, const at::Tensor& probe_label_col, const at::Tensor& l2,
                     int64_t max_iter, double tol, int64_t history, int64_t check_every, const Switches& sw) {
  const ProbeLayout layout = check_probe_args(x, labels, weight, bias, probe_offsets, probe_label_col, l2);
  TORCH_CHECK_VALUE(max_iter >= 0, "uinfo_fast: max_iter must be >= 0, got ", max_iter);
  TORCH_CHECK_VALUE(tol > 0, "uinfo_fast: tol must be > 0, got ", tol);
  TORCH_CHECK_VALUE(history >= 1, "uinfo_fast: history must be >= 1, got ", history);
  TORCH_CHECK_VALUE(check_every >= 1, "uinfo_fast: check_every must be >= 1, got ", check_every);
  const int64_t d = x.size(1), n_probes = layout.n_probes;
  const auto dt = weight.scalar_type();
  const auto dbl = weight.options().dtype(at::kDouble);
  const at::Tensor xc = x.contiguous(), yc = labels.contiguous();
  const at::Tensor l2_host = l2.to(at::kCPU, at::kDouble).contiguous();
  std::vector<double> penalties;
  std::vector<int64_t> group(n_probes);
  for (int64_t k = 0; k < n_probes; ++k) {
    const double v = l2_host.data_ptr<double>()[k];
    const auto it = std::find(penalties.begin(), penalties.end(), v);
    group[k] = it - penalties.begin();
    if (it == penalties.end()) penalties.push_back(v);
  }
  const at::Tensor precond = make_preconditioners(xc, penalties, dt);

  // Outputs, written back each time finished probes leave the running set.
  at::Tensor params_out = at::cat({weight, bias.unsqueeze(0)}, 0).contiguous();
  at::Tensor f_out = at::empty({n_probes}, dbl), gmax_out = at::empty({n_probes}, dbl);
  at::Tensor iters_out = at::zeros({n_probes}, weight.options().dtype(at::kLong));
  at::Tensor status_out = at::zeros_like(iters_out);
  // Below this relative change the objective is flat at the working precision.
  const double ftol = dt == at::kDouble ? 2.220446049250313e-16 : 1.1920928955078125e-07;

  FitState st;
  st.layout = layout;
  for (int64_t k = 0; k < n_probes; ++k) st.ids.push_back(k);
  st.group = group;
  build_groups(st, static_cast<int64_t>(penalties.size()));
  st.orig_cols = at::arange(layout.n_cols, weight.options().dtype(at::kLong));
  st.l2 = l2.to(at::kDouble);
  st.params = params_out.clone();
  st.grad = at::empty_like(st.params);
  st.f = penalised_objective(xc, yc, st.params, st.layout, st.l2, &st.grad, sw);
  st.gmax = seg_absmax(st.grad, st.layout);
  st.done = st.gmax.le(tol);
  st.status = st.done.to(at::kLong);
  // First step: the curvature bound's Newton step, which the bound makes a descent of at
  // least half its predicted decrease, so t = 1.
  st.pgrad = precondition(precond, st, st.grad);
  st.dir = st.pgrad.neg();
  st.gd = seg_dot(st.grad, st.dir, st.layout);
  st.t = at::ones({n_probes}, dbl);
  st.gamma = at::ones({n_probes}, dbl);
  st.fails = at::zeros({n_probes}, iters_out.options());
  st.flat = at::zeros_like(st.fails);
  st.iters = at::zeros({n_probes}, iters_out.options());
  st.hist_s = at::zeros({history, d + 1, layout.n_cols}, st.params.options());
  st.hist_y = at::zeros_like(st.hist_s);
  st.hist_py = at::zeros_like(st.hist_s);
  st.sy = at::zeros({history, history, n_probes}, dbl);
  st.ypy = at::zeros_like(st.sy);
  int64_t newest = history - 1, count = 0;

  auto write_back = [&](const FitState& s) {
    const at::Tensor ids = at::tensor(s.ids, at::TensorOptions().dtype(at::kLong)).to(x.device());
    params_out.index_copy_(1, s.orig_cols, s.params);
    f_out.index_copy_(0, ids, s.f);
    gmax_out.index_copy_(0, ids, s.gmax);
    iters_out.index_copy_(0, ids, s.iters);
    status_out.index_copy_(0, ids, s.status);
  };

  // The per-iteration bookkeeping runs fused, the device's update kernels (Backend::lbfgs_update);
  // UINFO_FAST_GENERIC_LBFGS=1 selects the device-generic ATen formulation below instead, so
  // tests can hold them together.
  const Backend& backend = backend_for(xc.device());
  const bool fused = !sw.generic_lbfgs;
  // The trial point of every running probe, params + t dir, with its objective, gradient and
  // preconditioned gradient. P grad at the trial gives P y = P grad_trial - P grad, and the next
  // P grad if accepted; both come from fresh products, so float32 rounding never accumulates.
  struct Trial {
    at::Tensor active, t_act, params, grad, pgrad, f;
  };
  auto evaluate_trial = [&]() {
    Trial tr;
    tr.active = st.done.logical_not();
    tr.t_act = st.t * tr.active;
    tr.params = st.params + st.dir * per_col(tr.t_act, st.layout, dt);
    tr.grad = at::empty_like(tr.params);
    tr.f = penalised_objective(xc, yc, tr.params, st.layout, st.l2, &tr.grad, sw);
    tr.pgrad = precondition(precond, st, tr.grad);
    return tr;
  };
  // With UINFO_FAST_CUDA_GRAPHS=1, blocks of check_every fused iterations run as one recording
  // (a CUDA graph, cuda/cuda_graph_runner.cpp) once the history is full (so every block sees the
  // same `count`) when check_every is a multiple of the history (so every block starts at the
  // same slot and one recording serves them all until the next compaction). The recording needs
  // the fused update: the ATen one makes new state tensors.
  const std::unique_ptr<IterationBlockRunner> graph =
      (fused && sw.cuda_graphs && backend.make_block_runner) ? backend.make_block_runner() : nullptr;
  int64_t running_set = 0;  // changes whenever compaction rebuilds the state's tensors
  for (int64_t it = 0; it < max_iter;) {
    if (it % check_every == 0) {  // the only host synchronisation of the loop
      const at::Tensor done_h = st.done.to(at::kCPU);
      const bool* dp = done_h.data_ptr<bool>();
      std::vector<int64_t> keep;
      for (int64_t k = 0; k < st.layout.n_probes; ++k)
        if (!dp[k]) keep.push_back(k);
      if (keep.empty()) break;
      if (static_cast<int64_t>(keep.size()) < st.layout.n_probes) {
        write_back(st);
        st = select_probes(st, keep);
        ++running_set;
      }
    }
    if (graph != nullptr && count == history && check_every % history == 0 && it % check_every == 0 &&
        it + check_every <= max_iter) {
      if (!graph->matches(running_set, newest))
        graph->capture(running_set, newest, [&] {
          for (int64_t j = 1; j <= check_every; ++j) {
            const Trial tr = evaluate_trial();
            backend.lbfgs_update(st, tr.params, tr.grad, tr.pgrad, tr.f, (newest + j) % history, history, tol,
                                 ftol);
          }
        });
      graph->replay();
      newest = (newest + check_every) % history;
      it += check_every;
      continue;
    }
    ++it;
    const ProbeLayout& lay = st.layout;
    const Trial tr = evaluate_trial();
    const at::Tensor &active = tr.active, &t_act = tr.t_act, &trial = tr.params, &grad_trial = tr.grad,
                     &pgrad_trial = tr.pgrad, &f_trial = tr.f;
    newest = (newest + 1) % history;
    count = std::min(count + 1, history);
    if (fused) {
      backend.lbfgs_update(st, trial, grad_trial, pgrad_trial, f_trial, newest, count, tol, ftol);
      continue;
    }

    const at::Tensor ok = active & f_trial.isfinite() & f_trial.le(st.f + kArmijo * t_act * st.gd);
    const at::Tensor ok_cols = per_col(ok, lay, at::kBool);
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
    // The new pair's row and column of the Gram matrices (P is symmetric, so is Y^T P Y).
    st.sy.select(0, newest).copy_(seg_dots(st.hist_y, st.hist_s[newest], lay));
    st.sy.select(1, newest).copy_(seg_dots(st.hist_s, st.hist_y[newest], lay));
    const at::Tensor ypy_new = seg_dots(st.hist_py, st.hist_y[newest], lay);
    st.ypy.select(0, newest).copy_(ypy_new);
    st.ypy.select(1, newest).copy_(ypy_new);
    st.gamma = at::where(valid, sy / yy, st.gamma);

    // Rejected steps shrink to the minimiser of the quadratic through f, f'(0) and f(t),
    // kept within [0.1 t, 0.5 t]; a trial with a non-finite objective shrinks tenfold.
    const at::Tensor curv = 2 * (f_trial - st.f - st.gd * t_act);
    const at::Tensor t_quad = at::where(curv.gt(0) & f_trial.isfinite(),
                                        (-st.gd * t_act * t_act / curv).clamp(0.1 * t_act, 0.5 * t_act),
                                        0.1 * t_act);
    st.t = at::where(ok, at::ones_like(st.t), at::where(active, t_quad, st.t));
    st.fails = at::where(ok, at::zeros_like(st.fails), st.fails + active.to(at::kLong));
    st.iters.add_(active.to(at::kLong));
    st.params = at::where(ok_cols, trial, st.params);
    st.grad = at::where(ok_cols, grad_trial, st.grad);
    st.pgrad = at::where(ok_cols, pgrad_trial, st.pgrad);
    // A trial whose objective differs from f only at the rounding level counts towards "flat"
    // whether or not Armijo accepted it: near the optimum the float32 logits make f noisy, and
    // a search that keeps rejecting such steps has converged, not failed.
    const at::Tensor rel_change = (st.f - f_trial).abs() / at::maximum(at::maximum(st.f.abs(), f_trial.abs()), at::ones_like(st.f));
    const at::Tensor at_rounding = active & f_trial.isfinite() & rel_change.le(ftol);
    st.flat = at::where(at_rounding, st.flat + 1, at::where(ok, at::zeros_like(st.flat), st.flat));
    st.f = at::where(ok, f_trial, st.f);
    st.gmax = seg_absmax(st.grad, lay);
    const at::Tensor converged = active & st.gmax.le(tol);
    const at::Tensor flat = active & converged.logical_not() & st.flat.ge(kMaxFlat);
    const at::Tensor failed = active & (converged | flat).logical_not() & st.fails.ge(kMaxFails);
    st.status = at::where(converged, 1, at::where(flat, 2, at::where(failed, 3, st.status)));
    st.done = st.done | converged | flat | failed;

    // New quasi-Newton direction for the probes that moved; the preconditioned gradient step if
    // it is not a descent direction (lost positive definiteness through rounding).
    at::Tensor dir = lbfgs_direction(st, newest, count).neg_();
    at::Tensor gd = seg_dot(st.grad, dir, lay);
    const at::Tensor descent = gd.lt(0);
    dir = at::where(per_col(descent, lay, at::kBool), dir, st.pgrad.neg());
    gd = at::where(descent, gd, seg_dot(st.grad, st.pgrad, lay).neg_());
    st.dir = at::where(ok_cols, dir, st.dir);
    st.gd = at::where(ok, gd, st.gd);
  }
  write_back(st);
  at::Tensor w_out = params_out.narrow(0, 0, d).clone();  // outputs must not alias
  at::Tensor b_out = params_out.select(0, d).clone();
  return {w_out, b_out, f_out, gmax_out, iters_out, status_out};
}

}  // namespace uinfo_fast
