// Fused CPU bookkeeping of one batched L-BFGS iteration (generic/lbfgs_update.h): every probe's
// acceptance, history pair, Gram matrices, step, counters, status and next direction in one
// pass over its own columns, probes in parallel. The ATen formulation (generic/lbfgs_update.cpp,
// selected by UINFO_FAST_GENERIC_LBFGS=1) has the same semantics; the tests hold the two together.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../generic/compact_lbfgs.h"
#include "cpu_kernels.h"

namespace uinfo_fast {
namespace {

// One probe's columns [lo, hi) of [rows, n_cols] row-major matrices. Row segments are contiguous,
// so inner loops run over c with `omp simd` (vectorised reductions without -ffast-math) in the
// compute dtype, and row results are summed in float64.
struct Block {
  int64_t rows, n_cols, lo, hi;
};

template <typename T>
double dot(const Block& b, const T* x, const T* y) {
  double acc = 0.0;
  for (int64_t r = 0; r < b.rows; ++r) {
    const T* xr = x + r * b.n_cols;
    const T* yr = y + r * b.n_cols;
    T row = 0;
#pragma omp simd reduction(+ : row)
    for (int64_t c = b.lo; c < b.hi; ++c) row += xr[c] * yr[c];
    acc += double(row);
  }
  return acc;
}

template <typename F>
void rows(const Block& b, F&& f) {  // f(offset of the row's first column of the block)
  for (int64_t r = 0; r < b.rows; ++r) f(r * b.n_cols);
}

template <typename T>
void update_probe(FitState& st, int64_t k, const T* trial, const T* grad_trial, const T* pgrad_trial, double f_trial,
                  int64_t newest, int64_t count, double ftol) {
  const int64_t n_rows = st.params.size(0), n_cols = st.params.size(1), m = st.hist_s.size(0);
  const int64_t n_probes = st.layout.n_probes;
  const int64_t lo = st.layout.offsets_host[k], hi = st.layout.offsets_host[k + 1];
  const int64_t slot_size = n_rows * n_cols;
  T* params = st.params.data_ptr<T>();
  T* grad = st.grad.data_ptr<T>();
  T* pgrad = st.pgrad.data_ptr<T>();
  T* dir = st.dir.data_ptr<T>();
  T* hs = st.hist_s.data_ptr<T>();
  T* hy = st.hist_y.data_ptr<T>();
  T* hpy = st.hist_py.data_ptr<T>();
  double* sy_mat = st.sy.data_ptr<double>();    // [m, m, K]
  double* ypy_mat = st.ypy.data_ptr<double>();  // [m, m, K]
  double& f = st.f.data_ptr<double>()[k];
  double& gd = st.gd.data_ptr<double>()[k];
  double& t = st.t.data_ptr<double>()[k];
  double& gamma = st.gamma.data_ptr<double>()[k];
  double& gmax = st.gmax.data_ptr<double>()[k];
  bool& done = st.done.data_ptr<bool>()[k];
  int64_t& fails = st.fails.data_ptr<int64_t>()[k];
  int64_t& flat = st.flat.data_ptr<int64_t>()[k];
  int64_t& iters = st.iters.data_ptr<int64_t>()[k];
  int64_t& status = st.status.data_ptr<int64_t>()[k];
  const Block blk{n_rows, n_cols, lo, hi};
  auto gram = [&](double* mat, int64_t i, int64_t j) -> double& { return mat[(i * m + j) * n_probes + k]; };

  const bool active = !done;
  const bool finite = std::isfinite(f_trial);
  const bool ok = active && finite && f_trial <= f + kArmijo * t * gd;

  // The new pair (s, y, P y): differences between trial and current point, into slot `newest`.
  T* s_new = hs + newest * slot_size;
  T* y_new = hy + newest * slot_size;
  T* py_new = hpy + newest * slot_size;
  rows(blk, [&](int64_t o) {
#pragma omp simd
    for (int64_t c = o + lo; c < o + hi; ++c) {
      s_new[c] = ok ? T(trial[c] - params[c]) : T(0);
      y_new[c] = ok ? T(grad_trial[c] - grad[c]) : T(0);
      py_new[c] = ok ? T(pgrad_trial[c] - pgrad[c]) : T(0);
    }
  });
  const double sy = ok ? dot(blk, s_new, y_new) : 0.0, yy = ok ? dot(blk, y_new, py_new) : 0.0;
  // Convexity makes s.y >= 0; a pair with no curvature left (rounding) is skipped, not stored.
  const bool valid = ok && sy > 1e-10 * yy && yy > 0.0;
  if (ok && !valid)
    rows(blk, [&](int64_t o) {
      std::fill(s_new + o + lo, s_new + o + hi, T(0));
      std::fill(y_new + o + lo, y_new + o + hi, T(0));
      std::fill(py_new + o + lo, py_new + o + hi, T(0));
    });
  // The new pair's row and column of the Gram matrices (P is symmetric, so is Y^T P Y).
  for (int64_t j = 0; j < m; ++j) {
    const bool live = valid && (newest - j + m) % m < count;  // slots not yet written hold zeros
    gram(sy_mat, newest, j) = live ? dot(blk, s_new, hy + j * slot_size) : 0.0;
    gram(sy_mat, j, newest) = live ? dot(blk, hs + j * slot_size, y_new) : 0.0;
    const double y_pyj = live ? dot(blk, y_new, hpy + j * slot_size) : 0.0;
    gram(ypy_mat, newest, j) = y_pyj;
    gram(ypy_mat, j, newest) = y_pyj;
  }
  if (valid) gamma = sy / yy;
  if (!active) return;

  // Rejected steps shrink to the minimiser of the quadratic through f, f'(0) and f(t), kept
  // within [0.1 t, 0.5 t]; a trial with a non-finite objective shrinks tenfold.
  const double curv = 2.0 * (f_trial - f - gd * t);
  const double t_quad = (curv > 0.0 && finite) ? std::clamp(-gd * t * t / curv, 0.1 * t, 0.5 * t) : 0.1 * t;
  t = ok ? 1.0 : t_quad;
  fails = ok ? 0 : fails + 1;
  iters += 1;
  // A trial whose objective differs from f only at the rounding level counts towards "flat"
  // whether or not Armijo accepted it (see update_status in generic/lbfgs_update.cpp).
  const double rel_change = std::abs(f - f_trial) / std::max({std::abs(f), std::abs(f_trial), 1.0});
  flat = (finite && rel_change <= ftol) ? flat + 1 : (ok ? 0 : flat);
  double g_abs = 0.0;
  if (ok) f = f_trial;
  rows(blk, [&](int64_t o) {
    if (ok) {
      std::copy(trial + o + lo, trial + o + hi, params + o + lo);
      std::copy(grad_trial + o + lo, grad_trial + o + hi, grad + o + lo);
      std::copy(pgrad_trial + o + lo, pgrad_trial + o + hi, pgrad + o + lo);
    }
    T row = 0;
#pragma omp simd reduction(max : row)
    for (int64_t c = o + lo; c < o + hi; ++c) row = std::max(row, grad[c] < 0 ? -grad[c] : grad[c]);
    g_abs = std::max(g_abs, double(row));
  });
  gmax = g_abs;
  const bool converged = gmax <= st.tol.data_ptr<double>()[k];
  const bool is_flat = !converged && flat >= kMaxFlat;
  const bool failed = !converged && !is_flat && fails >= kMaxFails;
  status = converged ? 1 : is_flat ? 2 : failed ? 3 : status;
  done = converged || is_flat || failed;
  if (!ok) return;

  // Next direction by the compact representation (see lbfgs_direction in generic/lbfgs_update.cpp):
  // d = -(gamma P g + S p - gamma (P Y) u), u = R^-1 a, p = R^-T ((D + gamma Y^T P Y) u - gamma b).
  std::vector<int64_t> order(count);
  for (int64_t i = 0; i < count; ++i) order[i] = (newest - count + 1 + i + m) % m;
  std::vector<double> a(count), b(count), u(count), p(count);
  for (int64_t i = 0; i < count; ++i) {
    a[i] = dot(blk, hs + order[i] * slot_size, static_cast<const T*>(grad));
    b[i] = dot(blk, hpy + order[i] * slot_size, static_cast<const T*>(grad));
  }
  compact_coefficients(
      static_cast<int>(count), a.data(), b.data(),
      [&](int i, int j) { return gram(sy_mat, order[i], order[j]); },
      [&](int i, int j) { return gram(ypy_mat, order[i], order[j]); }, gamma, u.data(), p.data());
  // dir = -(gamma P g + sum_i p_i s_i - gamma u_i (P y)_i), one history slot at a time.
  rows(blk, [&](int64_t o) {
    const T g = T(gamma);
#pragma omp simd
    for (int64_t c = o + lo; c < o + hi; ++c) dir[c] = -g * pgrad[c];
    for (int64_t i = 0; i < count; ++i) {
      const T ps = T(p[i]), pu = T(gamma * u[i]);
      const T* si = hs + order[i] * slot_size;
      const T* pyi = hpy + order[i] * slot_size;
#pragma omp simd
      for (int64_t c = o + lo; c < o + hi; ++c) dir[c] -= ps * si[c] - pu * pyi[c];
    }
  });
  gd = dot(blk, static_cast<const T*>(grad), static_cast<const T*>(dir));
  if (!(gd < 0.0)) {  // lost positive definiteness through rounding: preconditioned gradient step
    rows(blk, [&](int64_t o) {
      for (int64_t c = o + lo; c < o + hi; ++c) dir[c] = -pgrad[c];
    });
    gd = -dot(blk, static_cast<const T*>(grad), static_cast<const T*>(pgrad));
  }
}

}  // namespace

void lbfgs_update_cpu(FitState& st, const at::Tensor& trial, const at::Tensor& grad_trial,
                      const at::Tensor& pgrad_trial, const at::Tensor& f_trial, int64_t newest, int64_t count,
                      double ftol) {
  const std::vector<const at::Tensor*> tensors{&trial,  &grad_trial, &pgrad_trial, &st.params,
                                              &st.grad, &st.pgrad,   &st.dir,      &st.hist_s,
                                              &st.hist_y, &st.hist_py, &st.sy,     &st.ypy};
  for (const at::Tensor* t : tensors)
    TORCH_INTERNAL_ASSERT(t->is_cpu() && t->is_contiguous(), "lbfgs_update_cpu: CPU contiguous tensors expected");
  const at::Tensor ft = f_trial.contiguous();
  AT_DISPATCH_FLOATING_TYPES(st.params.scalar_type(), "lbfgs_update_cpu", [&] {
    const scalar_t* tp = trial.data_ptr<scalar_t>();
    const scalar_t* gtp = grad_trial.data_ptr<scalar_t>();
    const scalar_t* pgtp = pgrad_trial.data_ptr<scalar_t>();
    const double* ftp = ft.data_ptr<double>();
    // Probes own disjoint columns and Gram entries, so they update in parallel.
    at::parallel_for(0, st.layout.n_probes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k)
        update_probe<scalar_t>(st, k, tp, gtp, pgtp, ftp[k], newest, count, ftol);
    });
  });
}

}  // namespace uinfo_fast
