// Fused CUDA bookkeeping of one batched L-BFGS iteration (generic/lbfgs_update.h), the device
// twin of cpu/lbfgs_update_cpu.cpp: acceptance, history pair, Gram matrices, step, counters,
// status and next direction of every probe in three launches, whatever the number of probes.
//
// Why three: the ATen formulation (generic/lbfgs_update.cpp) issues about 300 small operator
// calls per iteration, whose launch cost alone rivals a full-size pass on a GPU. One block per
// probe (a first version) put a whole probe's sweeps on one multiprocessor: with the two probes
// of a penalty-path stage, 2 of an H200's 132 SMs worked (bench/RESULTS.md has the profile). Here
// every sweep spreads over (chunks of a probe's elements) x (probes) blocks:
//   1. gather: one sweep over the trial point and the history. Writes the new pair (s, y, P y)
//      into slot `newest`, moves the accepted trial into the state, and accumulates every dot
//      product the update needs (s.y, y.Py, g.Pg, max |g|, and per history slot j: s.y_j,
//      s_j.y, y.(Py)_j, s_j.g, (Py)_j.g) into [K, 6 + 5m] float64 sums, block partials added
//      atomically.
//   2. scalars: one thread per probe: acceptance, curvature test, Gram row and column, gamma,
//      step, counters, status, and the compact-representation coefficients of the next
//      direction (two m x m triangular solves in float64). g.dir follows from the sums too:
//      g.dir = -gamma g.Pg - sum_i p_i (s_i.g) + sum_i gamma u_i ((Py)_i.g).
//   3. direction: dir = -gamma P g - sum_i p_i s_i + sum_i gamma u_i (Py)_i (or -P g when that
//      is not a descent direction), and zeros for a pair that failed the curvature test.
// Bytes per iteration: the history (3 m (D+1) C floats) read about twice, a few (D+1) C arrays
// once: 100 MB at full width (D = 512, C = 960, m = 10); bench/RESULTS.md has the measured times.
// The atomic sums make the rounding order, and so the last bits, vary from run to run.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cmath>

#include "../generic/compact_lbfgs.h"
#include "cuda_kernels.h"

namespace uinfo_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPerThread = 4;                   // elements per thread in a gather/direction block
constexpr int kChunk = kThreads * kPerThread;   // elements per block
constexpr int kMaxHistory = 64;
constexpr int kBase = 6;                        // sums per probe before the per-slot ones

struct Scalars {  // per-probe state, [Ka] arrays
  double *f, *gd, *t, *gamma, *gmax;
  const double* tol;  // each probe's gradient tolerance
  bool* done;
  int64_t *fails, *flat, *iters, *status;
};

// Adds NV per-thread values over the block into dst[0..NV) with one atomic each (thread 0).
template <int NV>
__device__ void block_add(double (&v)[NV], double* scratch, double* dst) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int i = 0; i < NV; ++i)
    for (int o = 16; o > 0; o >>= 1) v[i] += __shfl_xor_sync(0xffffffffu, v[i], o);
  if (lane == 0)
#pragma unroll
    for (int i = 0; i < NV; ++i) scratch[warp * NV + i] = v[i];
  __syncthreads();
  if (threadIdx.x < NV) {
    double acc = 0.0;
    for (int w = 0; w < kWarps; ++w) acc += scratch[w * NV + threadIdx.x];
    atomicAdd(dst + threadIdx.x, acc);
  }
  __syncthreads();  // scratch is reused at once
}

// Probe k's element e of a [R, C] row-major matrix whose columns [lo, lo + width) it owns.
__device__ __forceinline__ int64_t element(int e, int width, int64_t lo, int64_t n_cols) {
  return static_cast<int64_t>(e / width) * n_cols + lo + e % width;
}

__device__ __forceinline__ bool accepted(const Scalars& sc, const double* f_trial, int64_t k) {
  return !sc.done[k] && isfinite(f_trial[k]) && f_trial[k] <= sc.f[k] + kArmijo * sc.t[k] * sc.gd[k];
}

template <typename T>
__global__ void __launch_bounds__(kThreads) gather_kernel(
    const T* __restrict__ trial, const T* __restrict__ grad_trial, const T* __restrict__ pgrad_trial,  // [R, C]
    const double* __restrict__ f_trial,                                                                // [Ka]
    T* params, T* grad, T* pgrad,     // [R, C]
    T* hs, T* hy, T* hpy,             // [m, R, C]
    const int64_t* __restrict__ offsets,  // [Ka+1]
    Scalars sc, double* sums,         // [Ka, 6 + 5m]
    int64_t n_rows, int64_t n_cols, int m, int newest) {
  __shared__ double scratch[kWarps * 6];
  const int64_t k = blockIdx.y;
  const int64_t lo = offsets[k];
  const int width = static_cast<int>(offsets[k + 1] - lo);
  const int n_el = static_cast<int>(n_rows) * width;
  const int e0 = blockIdx.x * kChunk;
  if (e0 >= n_el) return;  // uniform per block
  const bool ok = accepted(sc, f_trial, k);
  const bool active = !sc.done[k];
  const int64_t slot = n_rows * n_cols;
  double* out = sums + k * (kBase + 5 * m);

  T s[kPerThread], y[kPerThread], py[kPerThread], g[kPerThread];
  int64_t idx[kPerThread];
  double base[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
  double gabs = 0.0;
#pragma unroll
  for (int q = 0; q < kPerThread; ++q) {
    const int e = e0 + q * kThreads + threadIdx.x;
    idx[q] = e < n_el ? element(e, width, lo, n_cols) : -1;
    s[q] = y[q] = py[q] = g[q] = T(0);
    if (idx[q] < 0) continue;
    const int64_t i = idx[q];
    T pg;
    if (ok) {
      s[q] = trial[i] - params[i];
      y[q] = grad_trial[i] - grad[i];
      py[q] = pgrad_trial[i] - pgrad[i];
      g[q] = grad_trial[i];
      pg = pgrad_trial[i];
      params[i] = trial[i];
      grad[i] = g[q];
      pgrad[i] = pg;
    } else {
      g[q] = grad[i];
      pg = pgrad[i];
    }
    hs[newest * slot + i] = s[q];
    hy[newest * slot + i] = y[q];
    hpy[newest * slot + i] = py[q];
    base[0] += double(s[q] * y[q]);
    base[1] += double(y[q] * py[q]);
    base[2] += double(g[q] * pg);
    base[3] += double(s[q] * g[q]);
    base[4] += double(py[q] * g[q]);
    gabs = fmax(gabs, double(fabs(g[q])));
  }
  if (!active) return;  // a finished probe only clears its slot (uniform per block)
  // max |g| through the sum machinery's scratch: a block max, then an integer atomic max
  // (the bit patterns of non-negative doubles order like the numbers).
  for (int o = 16; o > 0; o >>= 1) gabs = fmax(gabs, __shfl_xor_sync(0xffffffffu, gabs, o));
  {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) scratch[kWarps * 5 + warp] = gabs;
    block_add(base, scratch, out);  // its first barrier also publishes the warp maxima
    if (threadIdx.x == 0) {
      double mx = 0.0;
      for (int w = 0; w < kWarps; ++w) mx = fmax(mx, scratch[kWarps * 5 + w]);
      atomicMax(reinterpret_cast<unsigned long long*>(out + 5), static_cast<unsigned long long>(__double_as_longlong(mx)));
    }
    __syncthreads();
  }
  if (!ok) return;  // the Gram entries and direction sums matter only for an accepted step
  for (int j = 0; j < m; ++j) {
    if (j == newest) continue;
    const T* hsj = hs + j * slot;
    const T* hyj = hy + j * slot;
    const T* hpyj = hpy + j * slot;
    double v[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      if (idx[q] < 0) continue;
      const int64_t i = idx[q];
      const T sj = hsj[i], pyj = hpyj[i];
      v[0] += double(s[q] * hyj[i]);
      v[1] += double(sj * y[q]);
      v[2] += double(y[q] * pyj);
      v[3] += double(sj * g[q]);
      v[4] += double(pyj * g[q]);
    }
    block_add(v, scratch, out + kBase + 5 * j);
  }
}

// One thread per probe. coef[k] = {mode (0 keep dir, 1 L-BFGS, 2 -P g), clear new slot, gamma,
// p by slot [m], gamma u by slot [m]}.
__global__ void scalars_kernel(const double* __restrict__ f_trial, const double* __restrict__ sums,
                               double* sy_mat, double* ypy_mat,  // [m, m, Ka]
                               Scalars sc, double* coef,         // [Ka, 3 + 2m]
                               int64_t n_probes, int m, int newest, int count, double ftol) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= n_probes) return;
  const double* acc = sums + k * (kBase + 5 * m);
  double* ck = coef + k * (3 + 2 * m);
  for (int i = 0; i < 3 + 2 * m; ++i) ck[i] = 0.0;
  auto gram = [&](double* mat, int i, int j) -> double& { return mat[(int64_t(i) * m + j) * n_probes + k]; };

  const bool active = !sc.done[k];
  const double ft = f_trial[k], f0 = sc.f[k], t0 = sc.t[k], gd0 = sc.gd[k];
  const bool finite = isfinite(ft);
  const bool ok = accepted(sc, f_trial, k);
  const double sy = ok ? acc[0] : 0.0, yy = ok ? acc[1] : 0.0;
  // Convexity makes s.y >= 0; a pair with no curvature left (rounding) is skipped, not stored.
  const bool valid = ok && sy > 1e-10 * yy && yy > 0.0;
  ck[1] = (ok && !valid) ? 1.0 : 0.0;
  // The new pair's row and column of the Gram matrices (P is symmetric, so is Y^T P Y).
  for (int j = 0; j < m; ++j) {
    const bool live = valid && (newest - j + m) % m < count;  // slots not yet written hold zeros
    const double* aj = acc + kBase + 5 * j;
    gram(sy_mat, newest, j) = live ? (j == newest ? sy : aj[0]) : 0.0;
    gram(sy_mat, j, newest) = live ? (j == newest ? sy : aj[1]) : 0.0;
    const double y_pyj = live ? (j == newest ? yy : aj[2]) : 0.0;
    gram(ypy_mat, newest, j) = y_pyj;
    gram(ypy_mat, j, newest) = y_pyj;
  }
  const double gamma = valid ? sy / yy : sc.gamma[k];
  sc.gamma[k] = gamma;
  if (!active) return;

  // Rejected steps shrink to the minimiser of the quadratic through f, f'(0) and f(t), kept
  // within [0.1 t, 0.5 t]; a trial with a non-finite objective shrinks tenfold.
  const double curv = 2.0 * (ft - f0 - gd0 * t0);
  const double t_quad = (curv > 0.0 && finite) ? fmin(fmax(-gd0 * t0 * t0 / curv, 0.1 * t0), 0.5 * t0) : 0.1 * t0;
  sc.t[k] = ok ? 1.0 : t_quad;
  sc.fails[k] = ok ? 0 : sc.fails[k] + 1;
  sc.iters[k] += 1;
  // A trial whose objective differs from f only at the rounding level counts towards "flat"
  // whether or not Armijo accepted it (see update_status in generic/lbfgs_update.cpp).
  const double rel_change = fabs(f0 - ft) / fmax(fmax(fabs(f0), fabs(ft)), 1.0);
  sc.flat[k] = (finite && rel_change <= ftol) ? sc.flat[k] + 1 : (ok ? 0 : sc.flat[k]);
  if (ok) sc.f[k] = ft;
  const double gmax = __longlong_as_double(static_cast<long long>(reinterpret_cast<const unsigned long long*>(acc)[5]));
  sc.gmax[k] = gmax;
  const bool converged = gmax <= sc.tol[k];
  const bool is_flat = !converged && sc.flat[k] >= kMaxFlat;
  const bool failed = !converged && !is_flat && sc.fails[k] >= kMaxFails;
  sc.status[k] = converged ? 1 : is_flat ? 2 : failed ? 3 : sc.status[k];
  sc.done[k] = converged || is_flat || failed;
  if (!ok) return;

  // Next direction by the compact representation (see lbfgs_direction in generic/lbfgs_update.cpp):
  // d = -(gamma P g + S p - gamma (P Y) u), u = R^-1 a, p = R^-T ((D + gamma Y^T P Y) u - gamma b).
  int order[kMaxHistory];
  double a[kMaxHistory], b[kMaxHistory], u[kMaxHistory], p[kMaxHistory];
  for (int i = 0; i < count; ++i) {
    order[i] = (newest - count + 1 + i + m) % m;
    const int j = order[i];
    a[i] = j == newest ? (valid ? acc[3] : 0.0) : acc[kBase + 5 * j + 3];
    b[i] = j == newest ? (valid ? acc[4] : 0.0) : acc[kBase + 5 * j + 4];
  }
  compact_coefficients(
      count, a, b, [&](int i, int j) { return gram(sy_mat, order[i], order[j]); },
      [&](int i, int j) { return gram(ypy_mat, order[i], order[j]); }, gamma, u, p);
  double gd = -gamma * acc[2];
  for (int i = 0; i < count; ++i) gd += -p[i] * a[i] + gamma * u[i] * b[i];
  if (gd < 0.0) {
    ck[0] = 1.0;
    ck[2] = gamma;
    for (int i = 0; i < count; ++i) {
      ck[3 + order[i]] = p[i];
      ck[3 + m + order[i]] = gamma * u[i];
    }
    sc.gd[k] = gd;
  } else {  // lost positive definiteness through rounding: preconditioned gradient step
    ck[0] = 2.0;
    sc.gd[k] = -acc[2];
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) direction_kernel(
    const T* __restrict__ pgrad,  // [R, C]
    T* dir,                       // [R, C]
    T* hs, T* hy, T* hpy,         // [m, R, C]
    const int64_t* __restrict__ offsets, const double* __restrict__ coef,  // [Ka+1], [Ka, 3 + 2m]
    int64_t n_rows, int64_t n_cols, int m, int newest) {
  const int64_t k = blockIdx.y;
  const double* ck = coef + k * (3 + 2 * m);
  const int mode = static_cast<int>(ck[0]);
  const bool clear = ck[1] != 0.0;
  if (mode == 0 && !clear) return;
  const int64_t lo = offsets[k];
  const int width = static_cast<int>(offsets[k + 1] - lo);
  const int n_el = static_cast<int>(n_rows) * width;
  const int64_t slot = n_rows * n_cols;
  const T g = T(ck[2]);
  for (int q = 0; q < kPerThread; ++q) {
    const int e = blockIdx.x * kChunk + q * kThreads + threadIdx.x;
    if (e >= n_el) break;
    const int64_t i = element(e, width, lo, n_cols);
    if (clear) hs[newest * slot + i] = hy[newest * slot + i] = hpy[newest * slot + i] = T(0);
    if (mode == 2) {
      dir[i] = -pgrad[i];
    } else if (mode == 1) {
      T d = -g * pgrad[i];
      for (int j = 0; j < m; ++j) {
        const double pj = ck[3 + j], uj = ck[3 + m + j];
        if (pj != 0.0 || uj != 0.0) d -= T(pj) * hs[j * slot + i] - T(uj) * hpy[j * slot + i];
      }
      dir[i] = d;
    }
  }
}

}  // namespace

void lbfgs_update_cuda(FitState& st, const at::Tensor& trial, const at::Tensor& grad_trial,
                       const at::Tensor& pgrad_trial, const at::Tensor& f_trial, int64_t newest, int64_t count,
                       double ftol) {
  const std::vector<const at::Tensor*> tensors{&trial,  &grad_trial, &pgrad_trial, &st.params, &st.grad,
                                              &st.pgrad, &st.dir,   &st.hist_s,   &st.hist_y, &st.hist_py,
                                              &st.sy,    &st.ypy,   &st.layout.offsets};
  for (const at::Tensor* t : tensors)
    TORCH_INTERNAL_ASSERT(t->is_cuda() && t->is_contiguous(), "lbfgs_update_cuda: CUDA contiguous tensors expected");
  const int64_t m = st.hist_s.size(0), n_probes = st.layout.n_probes;
  const int64_t n_rows = st.params.size(0), n_cols = st.params.size(1);
  TORCH_CHECK_VALUE(m <= kMaxHistory, "uinfo_fast: history must be <= ", kMaxHistory, " on CUDA, got ", m);
  if (n_probes == 0) return;
  int64_t widest = 0;
  for (int64_t k = 0; k < n_probes; ++k)
    widest = std::max(widest, st.layout.offsets_host[k + 1] - st.layout.offsets_host[k]);
  TORCH_CHECK_VALUE(n_rows * widest < (int64_t(1) << 31), "uinfo_fast: a probe's (D+1) x classes must be < 2^31");
  const c10::cuda::CUDAGuard guard(trial.device());
  const at::Tensor ft = f_trial.contiguous();
  const at::Tensor sums = at::zeros({n_probes, kBase + 5 * m}, ft.options());
  const at::Tensor coef = at::empty({n_probes, 3 + 2 * m}, ft.options());
  Scalars sc{st.f.data_ptr<double>(),    st.gd.data_ptr<double>(),     st.t.data_ptr<double>(),
             st.gamma.data_ptr<double>(), st.gmax.data_ptr<double>(),  st.tol.data_ptr<double>(),
             st.done.data_ptr<bool>(),
             st.fails.data_ptr<int64_t>(), st.flat.data_ptr<int64_t>(), st.iters.data_ptr<int64_t>(),
             st.status.data_ptr<int64_t>()};
  const dim3 grid(static_cast<unsigned>((n_rows * widest + kChunk - 1) / kChunk), static_cast<unsigned>(n_probes));
  TORCH_CHECK_VALUE(n_probes <= 65535, "uinfo_fast: at most 65535 probes per fit on CUDA, got ", n_probes);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int mi = static_cast<int>(m), nw = static_cast<int>(newest), cnt = static_cast<int>(count);
  AT_DISPATCH_FLOATING_TYPES(st.params.scalar_type(), "lbfgs_update_cuda", [&] {
    gather_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        trial.data_ptr<scalar_t>(), grad_trial.data_ptr<scalar_t>(), pgrad_trial.data_ptr<scalar_t>(),
        ft.data_ptr<double>(), st.params.data_ptr<scalar_t>(), st.grad.data_ptr<scalar_t>(),
        st.pgrad.data_ptr<scalar_t>(), st.hist_s.data_ptr<scalar_t>(), st.hist_y.data_ptr<scalar_t>(),
        st.hist_py.data_ptr<scalar_t>(), st.layout.offsets.data_ptr<int64_t>(), sc, sums.data_ptr<double>(), n_rows,
        n_cols, mi, nw);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    scalars_kernel<<<static_cast<unsigned>((n_probes + 127) / 128), 128, 0, stream>>>(
        ft.data_ptr<double>(), sums.data_ptr<double>(), st.sy.data_ptr<double>(), st.ypy.data_ptr<double>(), sc,
        coef.data_ptr<double>(), n_probes, mi, nw, cnt, ftol);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    direction_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        st.pgrad.data_ptr<scalar_t>(), st.dir.data_ptr<scalar_t>(), st.hist_s.data_ptr<scalar_t>(),
        st.hist_y.data_ptr<scalar_t>(), st.hist_py.data_ptr<scalar_t>(), st.layout.offsets.data_ptr<int64_t>(),
        coef.data_ptr<double>(), n_rows, n_cols, mi, nw);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace uinfo_fast
