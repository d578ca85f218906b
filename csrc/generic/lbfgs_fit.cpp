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
#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "backend.h"
#include "lbfgs_state.h"
#include "lbfgs_update.h"
#include "lockstep.h"
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

// 1/2 E[x~ x~^T] of the features with a constant column, in float64: the penalty-free part of
// Boehning's bound, computed once per feature set and shared by every stage of a fit.
at::Tensor bound_moment(const at::Tensor& x) {
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
  return moment.div_(static_cast<double>(n)).mul_(0.5);
}

// Inverses of Boehning's bound 1/2 E[x~ x~^T] + diag(l2, ..., l2, 0), one per distinct penalty.
at::Tensor make_preconditioners(const at::Tensor& moment, const std::vector<double>& penalties, c10::ScalarType dt) {
  const int64_t d = moment.size(0) - 1;
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

  // These results with the parameters in float64 and no iterations counted: the start of a polish.
  FitOutputs widened() const {
    FitOutputs out = *this;
    out.params = params.to(at::kDouble, /*non_blocking=*/false, /*copy=*/true);
    out.f = f.clone();
    out.gmax = gmax.clone();
    out.status = status.clone();
    out.iters = at::zeros_like(iters);
    return out;
  }

  // The polish `wide` of the probes `ids` (columns `cols`) written into these, in their dtype,
  // its iterations added to theirs.
  void absorb(const FitOutputs& wide, const at::Tensor& ids, const at::Tensor& cols) {
    params.index_copy_(1, cols, wide.params.index_select(1, cols).to(params.scalar_type()));
    for (auto [dst, src] : {std::pair<at::Tensor*, const at::Tensor*>{&f, &wide.f}, {&gmax, &wide.gmax},
                            {&status, &wide.status}})
      dst->index_copy_(0, ids, src->index_select(0, ids));
    iters.add_(wide.iters);
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

// The probes `ids` of a set (whose columns are `cols`, and whose layout among themselves is
// `layout`) running from their columns of `params`, with their objective, gradient and first
// direction: the curvature bound's Newton step, which the bound makes a descent of at least half
// its predicted decrease, so t = 1.
FitState initial_state(const at::Tensor& x, const at::Tensor& labels, const ProbeLayout& layout,
                       const std::vector<int64_t>& ids, const at::Tensor& cols, const at::Tensor& params,
                       const at::Tensor& l2, const PenaltyGroups& groups, const at::Tensor& precond, double tol,
                       std::optional<double> l2_tol, const Switches& sw) {
  FitState st;
  st.layout = layout;
  st.ids = ids;
  st.group = groups.of_probe;
  build_groups(st, static_cast<int64_t>(groups.values.size()));
  st.orig_cols = cols;
  st.l2 = l2;
  st.params = params.index_select(1, cols);
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

// One feature set of a fit: its checked arguments, what every stage of its fit shares (the
// penalties' groups and the curvature bound's moment) and every probe's results.
struct SetWork {
  at::Tensor x;  // contiguous
  ProbeLayout layout;
  at::Tensor l2;
  PenaltyGroups groups;
  at::Tensor moment;
  FitOutputs out;
};

// One stage of one set's fit: its loop and the set whose outputs it writes; `running` until its
// last probe finishes.
struct StageFit {
  SetWork* set;
  FitLoop loop;
  bool running = true;
};

// The iterations of every set's stage in lockstep rounds of check_every: each one's sequence of
// iterations is the one it would run alone, and a check costs one synchronisation for all.
void run_stages(std::vector<StageFit>& fits, int64_t max_iter, int64_t check_every) {
  for (int64_t it = 0; it < max_iter;) {
    const int64_t round = std::min(check_every, max_iter - it);
    // one host check for every stage: finished probes leave their running sets
    if (!check_all(fits, [](const StageFit& f) { return f.loop.st.done; },
                   [](StageFit& f, const bool* done) { return f.loop.compact(done, f.set->out); }))
      break;
    for (StageFit& s : fits)
      if (s.running) s.loop.run_round(it, round, max_iter);
    it += round;
  }
  for (StageFit& s : fits)
    if (s.running) s.set->out.write_back(s.loop.st);
}

struct FitSettings {
  double tol;
  std::optional<double> l2_tol;
  int64_t history, check_every;
  const Switches& sw;
};

// The penalty groups of `probes` alone, renumbered in order of first appearance.
PenaltyGroups subset(const PenaltyGroups& groups, const std::vector<int64_t>& probes) {
  PenaltyGroups out;
  std::vector<int64_t> renumbered(groups.values.size(), -1);
  for (int64_t k : probes) {
    const int64_t g = groups.of_probe[k];
    if (renumbered[g] < 0) {
      renumbered[g] = static_cast<int64_t>(out.values.size());
      out.values.push_back(groups.values[g]);
    }
    out.of_probe.push_back(renumbered[g]);
  }
  return out;
}

// The fit of the probes `probes` of `set`, from their columns of its outputs, ready to run.
StageFit prepare_stage(SetWork& set, const std::vector<int64_t>& probes, const at::Tensor& labels,
                       const FitSettings& fs) {
  const PenaltyGroups groups = subset(set.groups, probes);
  const auto dt = set.out.params.scalar_type();
  const at::Tensor precond = make_preconditioners(set.moment, groups.values, dt);
  const at::Tensor idx = at::tensor(probes, at::TensorOptions().dtype(at::kLong)).to(set.x.device());
  const Backend& backend = backend_for(set.x.device());
  const bool fused = !fs.sw.generic_lbfgs;
  FitLoop loop{set.x, labels, precond, fs.sw, flat_tolerance(dt), fs.history, fs.check_every,
               fused ? backend.lbfgs_update : &lbfgs_update_generic,
               // The recorded blocks need the fused update: the ATen one makes new state tensors.
               (fused && fs.sw.cuda_graphs && backend.make_block_runner) ? backend.make_block_runner() : nullptr,
               initial_state(set.x, labels, set.layout.select(probes), probes, set.layout.columns_of(probes),
                             set.out.params, set.l2.index_select(0, idx), groups, precond, fs.tol, fs.l2_tol, fs.sw),
               fs.history - 1};
  reset_counters_and_history(loop.st, fs.history);
  return StageFit{&set, std::move(loop)};
}

// The order a set's probes are fitted in: all at once (batched), or one stage per distinct
// penalty from the largest (best conditioned) down (path), each holding that penalty's probes.
std::vector<std::vector<int64_t>> fit_stages(const PenaltyGroups& groups, bool path) {
  const int64_t n_probes = static_cast<int64_t>(groups.of_probe.size());
  std::vector<int64_t> order(groups.values.size());
  for (size_t g = 0; g < order.size(); ++g) order[g] = static_cast<int64_t>(g);
  if (!path || order.size() < 2) order.assign(1, -1);  // -1: every probe
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return a >= 0 && b >= 0 && groups.values[a] > groups.values[b];
  });
  std::vector<std::vector<int64_t>> stages;
  for (int64_t g : order) {
    std::vector<int64_t> stage;
    for (int64_t k = 0; k < n_probes; ++k)
      if (g < 0 || groups.of_probe[k] == g) stage.push_back(k);
    stages.push_back(stage);
  }
  return stages;
}

// How far past the last stage's solution the next one starts, in log(l2): from the third stage
// on, the secant through the last two solutions, w_a + r (w_a - w_b), follows the path's growth of
// the weights as the penalty falls and cuts the iterations over restarting from w_a
// (bench/RESULTS.md). r is capped at 1 so that an uneven grid cannot throw the start far out; a
// zero penalty restarts from w_a.
double secant_ratio(double l2_b, double l2_a, double l2_new) {
  if (!(l2_new > 0 && l2_b > l2_a && l2_a > l2_new)) return 0.0;
  return std::min(1.0, std::log(l2_a / l2_new) / std::log(l2_b / l2_a));
}

// The probe of `stage` that predicts label column `col`, or -1.
int64_t same_label(const ProbeLayout& layout, const std::vector<int64_t>& stage, int64_t col) {
  for (int64_t k : stage)
    if (layout.label_col_host[k] == col) return k;
  return -1;
}

// Starts every probe of stage `s` of a path from its label set's probe of the stage before,
// moved along the secant through the two stages before it.
void predict_stage(SetWork& set, const std::vector<std::vector<int64_t>>& stages, size_t s) {
  const auto& lay = set.layout;
  const auto penalty = [&](size_t i) { return set.groups.values[set.groups.of_probe[stages[i][0]]]; };
  const double r = s >= 2 ? secant_ratio(penalty(s - 2), penalty(s - 1), penalty(s)) : 0.0;
  std::vector<int64_t> fresh, from, before;
  for (int64_t k : stages[s]) {
    const int64_t a = same_label(lay, stages[s - 1], lay.label_col_host[k]);
    if (a < 0) continue;  // no earlier probe of its label set: it starts where it stands
    const int64_t b = r > 0 ? same_label(lay, stages[s - 2], lay.label_col_host[k]) : a;
    fresh.push_back(k);
    from.push_back(a);
    before.push_back(b < 0 ? a : b);  // none two stages back: no secant, the last solution
  }
  if (fresh.empty()) return;
  at::Tensor& p = set.out.params;
  at::Tensor start = p.index_select(1, lay.columns_of(from));
  if (r > 0) start = start + r * (start - p.index_select(1, lay.columns_of(before)));
  p.index_copy_(1, lay.columns_of(fresh), start);
}

// The probes of each set that the polish fits on: those listed whose max |gradient| after the
// fit is above their polish tolerance. One host synchronisation for every set.
std::vector<std::vector<int64_t>> polish_lists(const std::vector<SetWork>& works, const PolishPlan& plan,
                                               double tol) {
  std::vector<at::Tensor> above;
  for (size_t i = 0; i < works.size(); ++i) {
    const at::Tensor listed = plan.probes[i].to(at::kCPU, at::kLong).contiguous();
    const int64_t n = works[i].layout.n_probes;
    for (int64_t j = 0; j < listed.numel(); ++j)
      TORCH_CHECK_VALUE(listed.data_ptr<int64_t>()[j] >= 0 && listed.data_ptr<int64_t>()[j] < n,
                        "uinfo_fast: polish[", i, "] lists probe ", listed.data_ptr<int64_t>()[j], " of a set of ", n);
    const at::Tensor idx = listed.to(works[i].x.device());
    const at::Tensor target = probe_tolerances(works[i].l2.index_select(0, idx), tol, plan.l2_tol);
    above.push_back(at::stack({idx, works[i].out.gmax.index_select(0, idx).gt(target).to(at::kLong)}));
  }
  std::vector<std::vector<int64_t>> out(works.size());
  const at::Tensor host = at::cat(above, 1).to(at::kCPU).contiguous();
  const int64_t* ids = host.data_ptr<int64_t>();
  const int64_t* flags = ids + host.size(1);
  for (size_t i = 0, c = 0; i < works.size(); ++i)
    for (int64_t j = 0; j < above[i].size(1); ++j, ++c)
      if (flags[c]) out[i].push_back(ids[c]);
  return out;
}

// The polish of every set (PolishPlan) in one lockstep run, in float64.
void polish_sets(std::vector<SetWork>& works, const PolishPlan& plan, const at::Tensor& labels,
                 const FitSchedule& schedule, const Switches& sw) {
  const std::vector<std::vector<int64_t>> lists = polish_lists(works, plan, schedule.tol);
  std::vector<SetWork> wide;
  wide.reserve(works.size());  // stages point into it
  std::vector<StageFit> fits;
  const FitSettings fs{schedule.tol, plan.l2_tol, schedule.history, schedule.check_every, sw};
  for (size_t i = 0; i < works.size(); ++i) {
    if (lists[i].empty()) continue;
    const SetWork& w = works[i];
    wide.push_back(SetWork{w.x, w.layout, w.l2, w.groups, w.moment, w.out.widened()});
    fits.push_back(prepare_stage(wide.back(), lists[i], labels, fs));
  }
  if (fits.empty()) return;
  run_stages(fits, schedule.max_iter, schedule.check_every);
  for (size_t i = 0, j = 0; i < works.size(); ++i) {
    if (lists[i].empty()) continue;
    const at::Tensor ids = at::tensor(lists[i], at::TensorOptions().dtype(at::kLong)).to(works[i].x.device());
    works[i].out.absorb(wide[j++].out, ids, works[i].layout.columns_of(lists[i]));
  }
}

SetWork prepare_set(const FitSet& set, const at::Tensor& labels, bool check_inputs) {
  const ProbeLayout layout = check_probe_args(set.x, labels, set.weight, set.bias, set.probe_offsets,
                                              set.probe_label_col, set.l2, check_inputs);
  const at::Tensor xc = set.x.contiguous();
  return SetWork{xc, layout, set.l2.to(at::kDouble), penalty_groups(set.l2), bound_moment(xc),
                 FitOutputs(set.weight, set.bias, layout.n_probes)};
}

}  // namespace

std::vector<FitResult> fit_probe_sets(const std::vector<FitSet>& sets, const at::Tensor& labels,
                                      const FitSchedule& schedule, const PolishPlan& polish, bool check_inputs,
                                      const Switches& sw) {
  TORCH_CHECK_VALUE(!sets.empty(), "uinfo_fast: fit_probes needs at least one feature set");
  check_fit_args(schedule.max_iter, schedule.tol, schedule.history, schedule.check_every);
  for (const auto& [name, v] : {std::pair<const char*, std::optional<double>>{"l2_tol", schedule.l2_tol},
                                 {"polish_l2_tol", polish.l2_tol}})
    TORCH_CHECK_VALUE(!v || *v > 0, "uinfo_fast: ", name, " must be > 0 or None, got ", v.value_or(0.0));
  TORCH_CHECK_VALUE(polish.probes.empty() || polish.probes.size() == sets.size(),
                    "uinfo_fast: fit_probes takes one polish list per feature set; got ", polish.probes.size(),
                    " for ", sets.size());
  const at::Tensor yc = labels.contiguous();
  std::vector<SetWork> works;
  works.reserve(sets.size());  // stages point into it
  std::vector<std::vector<std::vector<int64_t>>> stages;
  for (const FitSet& set : sets) {
    TORCH_CHECK_VALUE(set.x.device() == sets[0].x.device(), "uinfo_fast: every feature set of a fit must be on ",
                      sets[0].x.device(), ", found one on ", set.x.device());
    works.push_back(prepare_set(set, yc, check_inputs));
    stages.push_back(fit_stages(works.back().groups, schedule.path));
  }
  const FitSettings fs{schedule.tol, schedule.l2_tol, schedule.history, schedule.check_every, sw};
  for (size_t s = 0;; ++s) {  // stage s of every set that has one, in one lockstep run
    std::vector<StageFit> fits;
    for (size_t i = 0; i < works.size(); ++i) {
      if (s >= stages[i].size()) continue;
      if (s > 0) predict_stage(works[i], stages[i], s);
      fits.push_back(prepare_stage(works[i], stages[i][s], yc, fs));
    }
    if (fits.empty()) break;
    run_stages(fits, schedule.max_iter, schedule.check_every);
  }
  if (!polish.probes.empty()) polish_sets(works, polish, yc, schedule, sw);
  std::vector<FitResult> out;
  for (const SetWork& w : works) out.push_back(w.out.result());
  return out;
}

}  // namespace uinfo_fast
