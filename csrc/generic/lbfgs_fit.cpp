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
// direction) is written three times with one semantics (lbfgs_update.h): as ATen tensor
// expressions (lbfgs_update.cpp, device generic, the reference the tests hold the others to), as
// one fused loop per probe on the CPU (cpu/lbfgs_update_cpu.cpp) and as three launches on CUDA
// (cuda/lbfgs_update_cuda.cu): the ~300 small operator calls of the ATen form cost more than a
// pass on small problems, and on a GPU their launch overhead alone rivals a full-size pass. A fit
// picks one of them once, at its start; UINFO_FAST_GENERIC_LBFGS=1 picks the ATen form.
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
#include "lbfgs_update.h"
#include "probe_layout.h"
#include "probe_pass.h"

namespace uinfo_fast {
namespace {

void check_fit_args(int64_t max_iter, double tol, int64_t history, int64_t check_every) {
  TORCH_CHECK_VALUE(max_iter >= 0, "uinfo_fast: max_iter must be >= 0, got ", max_iter);
  TORCH_CHECK_VALUE(tol > 0, "uinfo_fast: tol must be > 0, got ", tol);
  TORCH_CHECK_VALUE(history >= 1, "uinfo_fast: history must be >= 1, got ", history);
  TORCH_CHECK_VALUE(check_every >= 1, "uinfo_fast: check_every must be >= 1, got ", check_every);
}

// The distinct penalties, in order of first appearance, and each probe's index among them: the
// probes of one penalty share one preconditioner.
struct PenaltyGroups {
  std::vector<double> values;
  std::vector<int64_t> of_probe;
};

PenaltyGroups penalty_groups(const at::Tensor& l2) {
  const at::Tensor l2_host = l2.to(at::kCPU, at::kDouble).contiguous();
  PenaltyGroups groups;
  for (int64_t k = 0; k < l2_host.size(0); ++k) {
    const double v = l2_host.data_ptr<double>()[k];
    const auto it = std::find(groups.values.begin(), groups.values.end(), v);
    groups.of_probe.push_back(it - groups.values.begin());
    if (it == groups.values.end()) groups.values.push_back(v);
  }
  return groups;
}

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
  // The second moment in the features' own compute dtype, even when the fit runs in float64 on
  // float32 features (a preconditioner needs no more than float32, a float64 product costs as
  // much as several passes on a CPU, and a float64 copy of the features twice their memory),
  // inverted in float64.
  const auto mdt = compute_dtype(x);
  const at::Tensor xw = x.scalar_type() == mdt ? x : x.to(mdt);
  at::Tensor moment = at::empty({d + 1, d + 1}, x.options().dtype(mdt));
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

// Below this relative change the objective is flat at the working precision.
double flat_tolerance(c10::ScalarType dt) {
  return dt == at::kDouble ? 2.220446049250313e-16 : 1.1920928955078125e-07;
}

// Every probe's results, written back each time finished probes leave the running set.
struct FitOutputs {
  at::Tensor params, f, gmax, iters, status;

  FitOutputs(const at::Tensor& weight, const at::Tensor& bias, int64_t n_probes) {
    const auto dbl = weight.options().dtype(at::kDouble);
    params = at::cat({weight, bias.unsqueeze(0)}, 0).contiguous();
    f = at::empty({n_probes}, dbl);
    gmax = at::empty({n_probes}, dbl);
    iters = at::zeros({n_probes}, weight.options().dtype(at::kLong));
    status = at::zeros_like(iters);
  }

  void write_back(const FitState& s) {
    const at::Tensor ids = at::tensor(s.ids, at::TensorOptions().dtype(at::kLong)).to(params.device());
    params.index_copy_(1, s.orig_cols, s.params);
    f.index_copy_(0, ids, s.f);
    gmax.index_copy_(0, ids, s.gmax);
    iters.index_copy_(0, ids, s.iters);
    status.index_copy_(0, ids, s.status);
  }

  FitResult result() const {
    const int64_t d = params.size(0) - 1;
    // Outputs must not alias.
    return {params.narrow(0, 0, d).clone(), params.select(0, d).clone(), f, gmax, iters, status};
  }
};

// Every probe running from `params`, with its objective, gradient and first direction: the
// curvature bound's Newton step, which the bound makes a descent of at least half its predicted
// decrease, so t = 1.
FitState initial_state(const at::Tensor& x, const at::Tensor& labels, const ProbeLayout& layout,
                       const at::Tensor& params, const at::Tensor& l2, const PenaltyGroups& groups,
                       const at::Tensor& precond, double tol, const Switches& sw) {
  FitState st;
  st.layout = layout;
  for (int64_t k = 0; k < layout.n_probes; ++k) st.ids.push_back(k);
  st.group = groups.of_probe;
  build_groups(st, static_cast<int64_t>(groups.values.size()));
  st.orig_cols = at::arange(layout.n_cols, params.options().dtype(at::kLong));
  st.l2 = l2.to(at::kDouble);
  st.params = params.clone();
  st.grad = at::empty_like(st.params);
  st.f = penalised_objective(x, labels, st.params, st.layout, st.l2, &st.grad, sw);
  st.gmax = seg_absmax(st.grad, st.layout);
  st.done = st.gmax.le(tol);
  st.status = st.done.to(at::kLong);
  st.pgrad = precondition(precond, st, st.grad);
  st.dir = st.pgrad.neg();
  st.gd = seg_dot(st.grad, st.dir, st.layout);
  return st;
}

// Unit steps and scales, zero counters and an empty history of `history` slots.
void reset_counters_and_history(FitState& st, int64_t history) {
  const int64_t n_probes = st.layout.n_probes;
  const auto dbl = st.params.options().dtype(at::kDouble);
  st.t = at::ones({n_probes}, dbl);
  st.gamma = at::ones({n_probes}, dbl);
  st.fails = at::zeros({n_probes}, st.params.options().dtype(at::kLong));
  st.flat = at::zeros_like(st.fails);
  st.iters = at::zeros_like(st.fails);
  st.hist_s = at::zeros({history, st.params.size(0), st.layout.n_cols}, st.params.options());
  st.hist_y = at::zeros_like(st.hist_s);
  st.hist_py = at::zeros_like(st.hist_s);
  st.sy = at::zeros({history, history, n_probes}, dbl);
  st.ypy = at::zeros_like(st.sy);
}

struct Trial {
  at::Tensor params, grad, pgrad, f;
};

// The iterations of one fit, on the running set `st`.
struct FitLoop {
  const at::Tensor& x;
  const at::Tensor& labels;
  const at::Tensor& precond;
  const Switches& sw;
  double tol, ftol;
  int64_t history, check_every;
  LbfgsUpdateFn update;                          // chosen once per fit
  std::unique_ptr<IterationBlockRunner> blocks;  // null: every iteration issued on its own
  FitState st;
  int64_t newest, count = 0;
  int64_t running_set = 0;  // changes whenever compaction rebuilds the state's tensors

  // The trial point of every running probe, params + t dir, with its objective, gradient and
  // preconditioned gradient. P grad at the trial gives P y = P grad_trial - P grad, and the next
  // P grad if accepted; both come from fresh products, so float32 rounding never accumulates.
  Trial evaluate_trial() {
    const at::Tensor t_act = st.t * st.done.logical_not();
    Trial tr;
    tr.params = st.params + st.dir * per_col(t_act, st.layout, st.params.scalar_type());
    tr.grad = at::empty_like(tr.params);
    tr.f = penalised_objective(x, labels, tr.params, st.layout, st.l2, &tr.grad, sw);
    tr.pgrad = precondition(precond, st, tr.grad);
    return tr;
  }

  void iterate() {
    const Trial tr = evaluate_trial();
    newest = (newest + 1) % history;
    count = std::min(count + 1, history);
    update(st, tr.params, tr.grad, tr.pgrad, tr.f, newest, count, tol, ftol);
  }

  // With a block runner (UINFO_FAST_CUDA_GRAPHS=1 on CUDA: cuda/cuda_graph_runner.cpp), a block
  // of check_every iterations runs as one recording once the history is full (so every block
  // sees the same `count`) when check_every is a multiple of the history (so every block starts
  // at the same slot and one recording serves them all until the next compaction).
  bool block_due(int64_t it, int64_t max_iter) const {
    return blocks != nullptr && count == history && check_every % history == 0 && it % check_every == 0 &&
           it + check_every <= max_iter;
  }

  void run_block() {
    if (!blocks->matches(running_set, newest))
      blocks->capture(running_set, newest, [&] {
        for (int64_t j = 1; j <= check_every; ++j) {
          const Trial tr = evaluate_trial();
          update(st, tr.params, tr.grad, tr.pgrad, tr.f, (newest + j) % history, history, tol, ftol);
        }
      });
    blocks->replay();
    newest = (newest + check_every) % history;
  }

  // The only host synchronisation of the loop. Returns false when every probe is done;
  // otherwise drops the finished ones from the running set, their results into `out`.
  bool compact(FitOutputs& out) {
    const at::Tensor done_h = st.done.to(at::kCPU);
    const bool* dp = done_h.data_ptr<bool>();
    std::vector<int64_t> keep;
    for (int64_t k = 0; k < st.layout.n_probes; ++k)
      if (!dp[k]) keep.push_back(k);
    if (keep.empty()) return false;
    if (static_cast<int64_t>(keep.size()) < st.layout.n_probes) {
      out.write_back(st);
      st = select_probes(st, keep);
      ++running_set;
    }
    return true;
  }

  void run(int64_t max_iter, FitOutputs& out) {
    for (int64_t it = 0; it < max_iter;) {
      if (it % check_every == 0 && !compact(out)) break;
      if (block_due(it, max_iter)) {
        run_block();
        it += check_every;
      } else {
        iterate();
        ++it;
      }
    }
    out.write_back(st);
  }
};

}  // namespace

FitResult fit_probes(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& weight, const at::Tensor& bias,
                     const at::Tensor& probe_offsets, const at::Tensor& probe_label_col, const at::Tensor& l2,
                     int64_t max_iter, double tol, int64_t history, int64_t check_every, bool check_inputs,
                     const Switches& sw) {
  const ProbeLayout layout = check_probe_args(x, labels, weight, bias, probe_offsets, probe_label_col, l2, check_inputs);
  check_fit_args(max_iter, tol, history, check_every);
  const at::Tensor xc = x.contiguous(), yc = labels.contiguous();
  const PenaltyGroups groups = penalty_groups(l2);
  const at::Tensor precond = make_preconditioners(xc, groups.values, weight.scalar_type());
  FitOutputs out(weight, bias, layout.n_probes);
  const Backend& backend = backend_for(x.device());
  const bool fused = !sw.generic_lbfgs;
  FitLoop loop{xc, yc, precond, sw, tol, flat_tolerance(weight.scalar_type()), history, check_every,
               fused ? backend.lbfgs_update : &lbfgs_update_generic,
               // The recorded blocks need the fused update: the ATen one makes new state tensors.
               (fused && sw.cuda_graphs && backend.make_block_runner) ? backend.make_block_runner() : nullptr,
               initial_state(xc, yc, layout, out.params, l2, groups, precond, tol, sw), history - 1};
  reset_counters_and_history(loop.st, history);
  loop.run(max_iter, out);
  return out.result();
}

}  // namespace uinfo_fast
