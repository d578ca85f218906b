// CUDA kernel of uinfo_fast::softmax_xent_: one warp per (row, probe) segment.
//
// The segment of a probe is short (tens to a few thousand classes), so a warp reads it
// coalesced, reduces max and sum-of-exp with shuffles, and rewrites it in place as the
// residual softmax - onehot. The caller keeps the logits chunk small enough to live in L2,
// so the logits never make a round trip to device memory in practice.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <limits>

#include "../generic/softmax_xent.h"
#include "cuda_kernels.h"

namespace uinfo_fast {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename scalar_t>
__global__ void softmax_xent_kernel(scalar_t* __restrict__ logits,          // [B, Ctot]
                                    const int64_t* __restrict__ labels,     // [B, L]
                                    const int64_t* __restrict__ offsets,    // [K+1]
                                    const int64_t* __restrict__ label_col,  // [K]
                                    scalar_t* __restrict__ nll,             // [B, K]
                                    int64_t rows, int64_t ctot, int64_t n_label_cols, int64_t n_probes,
                                    scalar_t scale, bool write_residual) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t total = rows * n_probes;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
  const scalar_t nan = std::numeric_limits<scalar_t>::quiet_NaN();
  for (int64_t w = blockIdx.x * warps_per_block + threadIdx.x / kWarp; w < total; w += stride) {
    const int64_t i = w / n_probes, k = w % n_probes;
    const int64_t lo = offsets[k], hi = offsets[k + 1], col = label_col[k];
    // Inconsistent probe metadata gives NaN, never a read outside the row (same rule as CPU).
    if (!(lo >= 0 && lo < hi && hi <= ctot && col >= 0 && col < n_label_cols)) {
      if (lane == 0) nll[w] = nan;
      continue;
    }
    scalar_t* seg = logits + i * ctot + lo;
    const int64_t n_classes = hi - lo;
    const int64_t y = labels[i * n_label_cols + col];
    const bool valid = y >= 0 && y < n_classes;

    scalar_t m = -std::numeric_limits<scalar_t>::infinity();
    for (int64_t c = lane; c < n_classes; c += kWarp) m = fmax(m, seg[c]);
    m = warp_max(m);
    scalar_t s = 0;
    for (int64_t c = lane; c < n_classes; c += kWarp) s += dev_exp(seg[c] - m);
    s = warp_sum(s);
    const scalar_t lse = m + dev_log(s);
    const scalar_t target = valid ? seg[y] : scalar_t(0);
    if (lane == 0) nll[w] = valid ? lse - target : nan;
    // Every lane has read seg[y] before any lane overwrites the segment.
    __syncwarp();
    if (write_residual) {
      for (int64_t c = lane; c < n_classes; c += kWarp) {
        const scalar_t p = dev_exp(seg[c] - lse) * scale;
        seg[c] = (valid && c == y) ? p - scale : p;
      }
    }
  }
}

}  // namespace

at::Tensor softmax_xent_cuda(const at::Tensor& logits, const at::Tensor& labels,
                             const at::Tensor& probe_offsets, const at::Tensor& probe_label_col,
                             double grad_scale, bool write_residual, const Switches& /*sw: none apply*/) {
  check_softmax_xent_args(logits, labels, probe_offsets, probe_label_col);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), ctot = logits.size(1);
  const int64_t n_probes = probe_label_col.size(0), n_label_cols = labels.size(1);
  at::Tensor nll = at::empty({rows, n_probes}, logits.options());
  const int64_t total = rows * n_probes;
  if (total == 0) return nll;
  const at::Tensor offsets = probe_offsets.contiguous(), cols = probe_label_col.contiguous();
  const at::Tensor labels_c = labels.contiguous();
  const int64_t warps_per_block = kThreads / kWarp;
  const int64_t blocks = std::min<int64_t>((total + warps_per_block - 1) / warps_per_block, 65535LL * 16);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "softmax_xent_cuda", [&] {
    softmax_xent_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        logits.data_ptr<scalar_t>(), labels_c.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(),
        cols.data_ptr<int64_t>(), nll.data_ptr<scalar_t>(), rows, ctot, n_label_cols, n_probes,
        static_cast<scalar_t>(grad_scale), write_residual);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return nll;
}

}  // namespace uinfo_fast
