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
#include <optional>
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
  for (auto [dst, src] : {std::pair<at::Tensor*, const at::Tensor*>{&out.l2, &st.l2}, {&out.tol, &st.tol},
                          {&out.f, &st.f},
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

// Each probe's gradient tolerance: `tol`, and with `l2_tol` at most l2_tol times its penalty. A
// probe's weights sit about |gradient| / l2 from their optimum along its flattest directions,
// so a tolerance that shrinks with the penalty fits every probe of a grid about as closely.
at::Tensor probe_tolerances(const at::Tensor& l2, double tol, std::optional<double> l2_tol) {
  at::Tensor out = at::full_like(l2, tol);
  if (!l2_tol) return out;
  return at::where(l2.gt(0), at::minimum(out, l2 * *l2_tol), out);
}

// Every probe running from `params`, with its objective, gradient and first direction: the
// curvature bound's Newton step, which the bound makes a descent of at least half its predicted
// decrease, so t = 1.
FitState initial_state(const at::Tensor& x, const at::Tensor& labels, const ProbeLayout& layout,
                       const at::Tensor& params, const at::Tensor& l2, const PenaltyGroups& groups,
                       const at::Tensor& precond, double tol, std::optional<double> l2_tol, const Switches& sw) {
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
  st.tol = probe_tolerances(st.l2, tol, l2_tol);
  st.done = st.gmax.le(st.tol);
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
  at::Tensor x;
  at::Tensor labels;
  at::Tensor precond;
  const Switches& sw;
  double ftol;
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
    update(st, tr.params, tr.grad, tr.pgrad, tr.f, newest, count, ftol);
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
          update(st, tr.params, tr.grad, tr.pgrad, tr.f, (newest + j) % history, history, ftol);
        }
      });
    blocks->replay();
    newest = (newest + check_every) % history;
  }

  // The iterations between two host checks: one recorded block when one is due, else `round`
  // iterations one by one.
  void run_round(int64_t it, int64_t round, int64_t max_iter) {
    if (round == check_every && block_due(it, max_iter)) {
      run_block();
      return;
    }
    for (int64_t j = 0; j < round; ++j) iterate();
  }

  // After a host check: drops the finished probes (`done_h`: the running set's done flags, on the
  // host) from the running set, their results into `out`. Returns false when none is left.
  bool compact(const bool* done_h, FitOutputs& out) {
    std::vector<int64_t> keep;
    for (int64_t k = 0; k < st.layout.n_probes; ++k)
      if (!done_h[k]) keep.push_back(k);
    if (static_cast<int64_t>(keep.size()) < st.layout.n_probes) out.write_back(st);
    if (keep.empty()) return false;
    if (static_cast<int64_t>(keep.size()) < st.layout.n_probes) {
      st = select_probes(st, keep);
      ++running_set;
    }
    return true;
  }
};

// One feature set's fit: its outputs and its loop; `running` until its last probe finishes.
struct SetFit {
  FitOutputs out;
  FitLoop loop;
  bool running = true;
};

// The host check of every running set, with one host synchronisation for all of them: their
// done flags copied in one piece. Returns false when no set has a probe left.
bool check_all(std::vector<SetFit>& sets) {
  std::vector<at::Tensor> flags;
  for (const SetFit& s : sets)
    if (s.running) flags.push_back(s.loop.st.done);
  if (flags.empty()) return false;
  const at::Tensor done_h = at::cat(flags).to(at::kCPU);
  const bool* dp = done_h.data_ptr<bool>();
  bool any = false;
  for (SetFit& s : sets) {
    if (!s.running) continue;
    const int64_t n = s.loop.st.layout.n_probes;
    s.running = s.loop.compact(dp, s.out);
    dp += n;
    any = any || s.running;
  }
  return any;
}

// The iterations of every set in lockstep rounds of check_every: each set's sequence of
// iterations is the one it would run alone, and a check costs one synchronisation for all.
void run_sets(std::vector<SetFit>& sets, int64_t max_iter, int64_t check_every) {
  for (int64_t it = 0; it < max_iter;) {
    const int64_t round = std::min(check_every, max_iter - it);
    if (!check_all(sets)) break;
    for (SetFit& s : sets)
      if (s.running) s.loop.run_round(it, round, max_iter);
    it += round;
  }
  for (SetFit& s : sets)
    if (s.running) s.out.write_back(s.loop.st);
}

// A set's fit from its (checked) arguments, ready to run.
SetFit prepare_set(const FitSet& set, const ProbeLayout& layout, const at::Tensor& labels, const Switches& sw,
                   double tol, std::optional<double> l2_tol, int64_t history, int64_t check_every) {
  const at::Tensor xc = set.x.contiguous();
  const PenaltyGroups groups = penalty_groups(set.l2);
  const at::Tensor precond = make_preconditioners(xc, groups.values, set.weight.scalar_type());
  FitOutputs out(set.weight, set.bias, layout.n_probes);
  const Backend& backend = backend_for(xc.device());
  const bool fused = !sw.generic_lbfgs;
  FitLoop loop{xc, labels, precond, sw, flat_tolerance(set.weight.scalar_type()), history, check_every,
               fused ? backend.lbfgs_update : &lbfgs_update_generic,
               // The recorded blocks need the fused update: the ATen one makes new state tensors.
               (fused && sw.cuda_graphs && backend.make_block_runner) ? backend.make_block_runner() : nullptr,
               initial_state(xc, labels, layout, out.params, set.l2, groups, precond, tol, l2_tol, sw), history - 1};
  reset_counters_and_history(loop.st, history);
  return SetFit{std::move(out), std::move(loop)};
}

}  // namespace

std::vector<FitResult> fit_probe_sets(const std::vector<FitSet>& sets, const at::Tensor& labels, int64_t max_iter,
                                      double tol, std::optional<double> l2_tol, int64_t history, int64_t check_every,
                                      bool check_inputs, const Switches& sw) {
  TORCH_CHECK_VALUE(!sets.empty(), "uinfo_fast: fit_probes needs at least one feature set");
  check_fit_args(max_iter, tol, history, check_every);
  TORCH_CHECK_VALUE(!l2_tol || *l2_tol > 0, "uinfo_fast: l2_tol must be > 0 or None, got ", l2_tol.value_or(0.0));
  const at::Tensor yc = labels.contiguous();
  std::vector<SetFit> fits;
  fits.reserve(sets.size());
  for (const FitSet& set : sets) {
    TORCH_CHECK_VALUE(set.x.device() == sets[0].x.device(), "uinfo_fast: every feature set of a fit must be on ",
                      sets[0].x.device(), ", found one on ", set.x.device());
    const ProbeLayout layout =
        check_probe_args(set.x, labels, set.weight, set.bias, set.probe_offsets, set.probe_label_col, set.l2,
                         check_inputs);
    fits.push_back(prepare_set(set, layout, yc, sw, tol, l2_tol, history, check_every));
  }
  run_sets(fits, max_iter, check_every);
  std::vector<FitResult> out;
  for (const SetFit& f : fits) out.push_back(f.out.result());
  return out;
}

}  // namespace uinfo_fast
