// Fused CUDA pass of nll_pass: logits -> log-softmax -> loss -> weight gradient in one kernel,
// with the logits living only in shared memory.
//
// Why: the chunked pass (generic/probe_pass.cpp) writes a logits chunk with cuBLAS, rewrites it in place
// as the residual and reads it back for the gradient product: the logits cross L2 four times
// (16 N C bytes a pass) in three launches per chunk. Here a block computes a 128 x 128 logits
// tile in registers and keeps it in shared memory for the softmax and for the gradient product;
// only the loss and the gradient leave the block.
//
// Work split. Columns come in tiles of 128 slots built on the host (ProbeLayout::tile_*): a tile
// holds whole probes (first-fit decreasing by class count), so a probe's softmax never crosses
// blocks; empty slots have column -1 and a residual of exactly 0. The grid is (tiles, row
// blocks), about 4 blocks per SM; block (t, r) takes row tiles r, r + R, r + 2R, ... of 128 rows,
// so the blocks of all tiles that run at one time read the same rows of X from L2. Per row tile:
//   1. S[128 x 128] = X_tile W[:, tile] + b: SGEMM with K-steps of 8 staged in shared memory
//      (double-buffered, next step prefetched into registers), 8 x 8 outputs per thread.
//   2. log-softmax per (row, probe) in shared memory: a group of pow2 >= n_classes lanes (at most
//      a warp) per pair, so 2-class probes do not leave 30 of 32 lanes idle; S becomes the
//      residual (softmax - onehot) / N; per-probe loss sums stay in shared memory (float64).
//   3. grad[0:D, tile] += X_tile^T R: 128 features at a time, X re-read from global (L2 holds
//      it: the tiles of one row block run side by side), R read from S, 8 x 8 outputs per
//      thread, then float atomics into grad (4 wide on sm_90 where 4 slots are 4 aligned
//      neighbouring columns). The bias gradient (column sums of R) stays in a register until the
//      block ends, as do the loss sums: one atomic per slot and per probe per block.
// All shared memory is written before it is read; nothing relies on zero-initialised memory.
// Budget: 127-128 registers a thread (no spills) and 78 KB of shared memory a block, so two
// blocks fit an SM on sm_80 and sm_90.
//
// Cost of a pass, with slots = 128 * tiles (>= C; first-fit decreasing leaves few empty):
//   FLOPs: 2 N D slots (logits) + 2 N D slots (gradient) = 2 * 2 * N * D * slots, fp32 FMA (SIMT).
//   DRAM bytes, ideally: X once (N D * sizeof(x); a block reads its row tile twice, and the
//   tiles' blocks of one row block share it through L2), labels N L * 8, params and grad
//   (D+1) C * 4 each; no logits. L2 traffic on top: the weight tile, (D+1) * slots * 4 bytes per
//   row tile, and the gradient atomics, ceil(N / 128) * D * slots * 4 bytes.
// bench/pass_roofline.py measures the pass against these floors and against cuBLAS plus a
// separate softmax over full logits; by its results (bench/RESULTS.md) the SIMT products, not
// memory, are what is in the way.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cuda_kernels.h"

namespace uinfo_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kBM = 128;                                        // rows per row tile
constexpr int kBN = static_cast<int>(ProbeLayout::kTileSlots);  // slots per column tile
constexpr int kBK = 8;                                          // K-step of both products
constexpr int kDC = 128;                                        // features per gradient chunk
constexpr int kLdS = kBN + 4;  // row stride of S: float4-aligned, shifts rows by 4 banks
constexpr int kLdStage = 128 + 4;
constexpr int kMaxTileProbes = kBN;  // a probe has at least one class
static_assert(kBN == 128 && kBM == 128 && kDC == 128 && kThreads == 256,
              "the thread-to-data maps below assume 128 x 128 tiles and 256 threads");

// Shared memory, in bytes from the start. Phase 1's staging aliases S: S is written only after
// the K-loop and a barrier, and is dead again before the next row tile's K-loop (barrier).
constexpr int kStageFloats = kBK * kLdStage;                    // one [8 x 128(+4)] operand
constexpr int kOffS = 0;                                        // float [kBM][kLdS]
constexpr int kOffX3 = kOffS + kBM * kLdS * 4;                  // float [2][kBK][kLdStage]
constexpr int kOffNll = kOffX3 + 2 * kStageFloats * 4;          // double [kMaxTileProbes]
constexpr int kOffCols = kOffNll + kMaxTileProbes * 8;          // int [kBN]
constexpr int kOffProbes = kOffCols + kBN * 4;                  // int [kMaxTileProbes][4]
constexpr int kOffVec = kOffProbes + kMaxTileProbes * 4 * 4;    // int [kBN / 4]
constexpr int kSmemBytes = kOffVec + (kBN / 4) * 4;
static_assert(4 * kStageFloats * 4 <= kBM * kLdS * 4, "phase 1 staging must fit inside S");
static_assert(kOffX3 % 16 == 0 && kOffNll % 8 == 0, "float4 and double alignment");

// Feature element types, converted to float on load. 16-bit types are read as raw bits and
// converted by hand, which needs neither c10's types nor the conversion operators that
// torch's -D__CUDA_NO_*_CONVERSIONS__ flags switch off.
struct XF32 {
  using T = float;
  __device__ static float cvt(float v) { return v; }
};
struct XBF16 {
  using T = uint16_t;
  __device__ static float cvt(uint16_t v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }
};
struct XF16 {
  using T = uint16_t;
  __device__ static float cvt(uint16_t v) { return __half2float(__ushort_as_half(v)); }
};

// x[row, k .. k+3] as floats from p = &x[row, k]; zeros where !row_ok or past feature d-1.
// `vec`: d % 4 == 0 and x is aligned to 4 elements, so an in-range quad at k % 4 == 0 is one
// 16-byte (8 for 16-bit types) load; otherwise (d = 37, say) bounds-checked scalar loads.
template <typename XT>
__device__ __forceinline__ float4 load_x4(const typename XT::T* __restrict__ p, bool row_ok, int k, int d, bool vec) {
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
  if (!row_ok || k >= d) return v;
  if (vec) {
    if constexpr (sizeof(typename XT::T) == 4) {
      return *reinterpret_cast<const float4*>(p);
    } else {
      const uint2 u = *reinterpret_cast<const uint2*>(p);
      v.x = XT::cvt(static_cast<uint16_t>(u.x & 0xffffu));
      v.y = XT::cvt(static_cast<uint16_t>(u.x >> 16));
      v.z = XT::cvt(static_cast<uint16_t>(u.y & 0xffffu));
      v.w = XT::cvt(static_cast<uint16_t>(u.y >> 16));
      return v;
    }
  }
  v.x = XT::cvt(p[0]);
  if (k + 1 < d) v.y = XT::cvt(p[1]);
  if (k + 2 < d) v.z = XT::cvt(p[2]);
  if (k + 3 < d) v.w = XT::cvt(p[3]);
  return v;
}

// Reductions over aligned groups of `width` lanes (a power of two <= 32). Every lane of the
// warp must call them: the shuffles name the full mask.
__device__ __forceinline__ float group_max(float v, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float group_sum(float v, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// acc[r][c] += a[r] * b[c] for the thread's 8 rows and 8 columns: a from a0 (rows ty*4..+3)
// and a1 (rows 64+ty*4..+3), b likewise. Split halves keep 8 neighbouring threads' float4
// reads on 128 contiguous bytes, so shared-memory reads are conflict-free.
__device__ __forceinline__ void outer_8x8(float (&acc)[8][8], const float4& a0, const float4& a1, const float4& b0,
                                          const float4& b1) {
  const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
  const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
  for (int r = 0; r < 8; ++r)
#pragma unroll
    for (int c = 0; c < 8; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
}

// grad[row, cols of slots 4g .. 4g+3] += v. `vec` (bit 2: the 4 slots are 4 neighbouring
// columns starting at a multiple of 4; bits 0/1: slot pair 0/1 likewise for 2) allows vector
// atomics, sm_90 and newer only; -1 columns (empty slots) are skipped.
__device__ __forceinline__ void atomic_add_group(float* __restrict__ grad_row, const int* __restrict__ s_cols, int g,
                                                 int vec, float v0, float v1, float v2, float v3) {
  const int c0 = s_cols[4 * g], c1 = s_cols[4 * g + 1], c2 = s_cols[4 * g + 2], c3 = s_cols[4 * g + 3];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (vec & 4) {
    atomicAdd(reinterpret_cast<float4*>(grad_row + c0), make_float4(v0, v1, v2, v3));
    return;
  }
  if (vec & 1) {
    atomicAdd(reinterpret_cast<float2*>(grad_row + c0), make_float2(v0, v1));
  } else {
    if (c0 >= 0) atomicAdd(grad_row + c0, v0);
    if (c1 >= 0) atomicAdd(grad_row + c1, v1);
  }
  if (vec & 2) {
    atomicAdd(reinterpret_cast<float2*>(grad_row + c2), make_float2(v2, v3));
  } else {
    if (c2 >= 0) atomicAdd(grad_row + c2, v2);
    if (c3 >= 0) atomicAdd(grad_row + c3, v3);
  }
#else
  (void)vec;
  if (c0 >= 0) atomicAdd(grad_row + c0, v0);
  if (c1 >= 0) atomicAdd(grad_row + c1, v1);
  if (c2 >= 0) atomicAdd(grad_row + c2, v2);
  if (c3 >= 0) atomicAdd(grad_row + c3, v3);
#endif
}

template <typename XT>
__global__ void __launch_bounds__(kThreads, 2)
    fused_nll_grad_kernel(const typename XT::T* __restrict__ x,      // [N, D]
                          const int64_t* __restrict__ labels,        // [N, L]
                          const float* __restrict__ params,          // [D+1, C]
                          const int32_t* __restrict__ tile_cols,     // [T, kBN]
                          const int32_t* __restrict__ tile_start,    // [T+1]
                          const int32_t* __restrict__ tile_probes,   // [K, 4]
                          float* __restrict__ grad,                  // [D+1, C], zeroed
                          double* __restrict__ nll_sum,              // [K], zeroed
                          int64_t n, int d, int64_t c, int64_t n_label_cols, float scale, bool x_vec,
                          bool grad_vec4, bool grad_vec2) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* s_S = reinterpret_cast<float*>(smem + kOffS);
  float* s_x3 = reinterpret_cast<float*>(smem + kOffX3);
  double* s_nll = reinterpret_cast<double*>(smem + kOffNll);
  int* s_cols = reinterpret_cast<int*>(smem + kOffCols);
  int* s_probes = reinterpret_cast<int*>(smem + kOffProbes);
  int* s_vec = reinterpret_cast<int*>(smem + kOffVec);

  const int t = threadIdx.x, tx = t % 16, ty = t / 16;
  const int warp = t / 32, lane = t % 32;
  const int64_t tile = blockIdx.x;

  // Tile metadata into shared memory; every entry the kernel reads is written here.
  const int p_begin = tile_start[tile];
  const int n_tp = min(tile_start[tile + 1] - p_begin, kMaxTileProbes);
  if (t < kBN) s_cols[t] = tile_cols[tile * kBN + t];
  for (int e = t; e < 4 * n_tp; e += kThreads) s_probes[e] = tile_probes[static_cast<int64_t>(p_begin) * 4 + e];
  for (int e = t; e < kMaxTileProbes; e += kThreads) s_nll[e] = 0.0;
  __syncthreads();
  if (t < kBN / 4) {
    const int c0 = s_cols[4 * t], c1 = s_cols[4 * t + 1], c2 = s_cols[4 * t + 2], c3 = s_cols[4 * t + 3];
    const bool p0 = grad_vec2 && c0 >= 0 && c0 % 2 == 0 && c1 == c0 + 1;
    const bool p1 = grad_vec2 && c2 >= 0 && c2 % 2 == 0 && c3 == c2 + 1;
    const bool q = grad_vec4 && c0 >= 0 && c0 % 4 == 0 && c1 == c0 + 1 && c2 == c0 + 2 && c3 == c0 + 3;
    s_vec[t] = (p0 ? 1 : 0) | (p1 ? 2 : 0) | (q ? 4 : 0);
  }
  __syncthreads();

  // Phase-1 load maps: X as row t/2, features 4*(t%2) .. +3 of the K-step; W as slot t%128,
  // K-step rows t/128 + {0, 2, 4, 6}.
  const int a_row = t / 2, a_k = (t % 2) * 4;
  const int b_slot = t % kBN, b_k = t / kBN;
  const int b_col = s_cols[b_slot];
  // Phase-3 load map: X as row t/32 of the 8-row step, features 4*(t%32) .. +3 of the chunk.
  const int x3_row = t / 32, x3_col = (t % 32) * 4;
  // Bias gradient of slot t%128 over rows 64*(t/128) .. +63 of each row tile.
  float bias_acc = 0.f;

  const int64_t n_row_tiles = (n + kBM - 1) / kBM;
  for (int64_t rt = blockIdx.y; rt < n_row_tiles; rt += gridDim.y) {
    const int64_t row0 = rt * kBM;
    const int rows_valid = n - row0 < kBM ? static_cast<int>(n - row0) : kBM;
    // The previous row tile's phase 3 still reads S and the phase-3 staging.
    __syncthreads();

    // ---- Phase 1: S = X_tile W_tile + b ----
    float acc[8][8];
#pragma unroll
    for (int r = 0; r < 8; ++r)
#pragma unroll
      for (int cc = 0; cc < 8; ++cc) acc[r][cc] = 0.f;
    // Row pointers advance with the K-step; 64-bit index products stay out of the loop.
    const bool a_ok = row0 + a_row < n;
    const typename XT::T* pa = x + (a_ok ? (row0 + a_row) * d : 0) + a_k;
    const float* pb = params + static_cast<int64_t>(b_k) * c + (b_col >= 0 ? b_col : 0);
    float4 a_reg = load_x4<XT>(pa, a_ok, a_k, d, x_vec);
    float b_reg[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) b_reg[q] = (b_col >= 0 && b_k + 2 * q < d) ? pb[2 * q * c] : 0.f;
    int buf = 0;
    for (int k0 = 0; k0 < d; k0 += kBK) {
      float* s_a = s_S + buf * 2 * kStageFloats;  // [kBK][kLdStage]: X^T, feature-major
      float* s_b = s_a + kStageFloats;            // [kBK][kLdStage]: W, slot-minor
      s_a[(a_k + 0) * kLdStage + a_row] = a_reg.x;
      s_a[(a_k + 1) * kLdStage + a_row] = a_reg.y;
      s_a[(a_k + 2) * kLdStage + a_row] = a_reg.z;
      s_a[(a_k + 3) * kLdStage + a_row] = a_reg.w;
#pragma unroll
      for (int q = 0; q < 4; ++q) s_b[(b_k + 2 * q) * kLdStage + b_slot] = b_reg[q];
      // One barrier per step: the buffer written next step was last read two steps ago.
      __syncthreads();
      if (k0 + kBK < d) {
        pa += kBK;
        pb += kBK * c;
        a_reg = load_x4<XT>(pa, a_ok, k0 + kBK + a_k, d, x_vec);
#pragma unroll
        for (int q = 0; q < 4; ++q)
          b_reg[q] = (b_col >= 0 && k0 + kBK + b_k + 2 * q < d) ? pb[2 * q * c] : 0.f;
      }
// Unrolled by 2, not 8: a full unroll lets ptxas hoist shared loads past 128 registers (spills).
#pragma unroll 2
      for (int kk = 0; kk < kBK; ++kk) {
        const float4 a0 = *reinterpret_cast<const float4*>(s_a + kk * kLdStage + ty * 4);
        const float4 a1 = *reinterpret_cast<const float4*>(s_a + kk * kLdStage + 64 + ty * 4);
        const float4 b0 = *reinterpret_cast<const float4*>(s_b + kk * kLdStage + tx * 4);
        const float4 b1 = *reinterpret_cast<const float4*>(s_b + kk * kLdStage + 64 + tx * 4);
        outer_8x8(acc, a0, a1, b0, b1);
      }
      buf ^= 1;
    }
    // The staging aliases S: every thread must be done with it before S is written.
    __syncthreads();
    {
      float bias[8];
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int col = s_cols[h * 64 + tx * 4 + j];
          bias[h * 4 + j] = col >= 0 ? params[d * c + col] : 0.f;
        }
#pragma unroll
      for (int r = 0; r < 8; ++r) {
        const int row = (r / 4) * 64 + ty * 4 + (r % 4);
        float* dst = s_S + row * kLdS;
        *reinterpret_cast<float4*>(dst + tx * 4) =
            make_float4(acc[r][0] + bias[0], acc[r][1] + bias[1], acc[r][2] + bias[2], acc[r][3] + bias[3]);
        *reinterpret_cast<float4*>(dst + 64 + tx * 4) =
            make_float4(acc[r][4] + bias[4], acc[r][5] + bias[5], acc[r][6] + bias[6], acc[r][7] + bias[7]);
      }
    }
    __syncthreads();

    // ---- Phase 2: S -> residual (softmax - onehot) * scale, loss sums ----
    // Rows past N and empty slots: residual 0 (disjoint from what the probes write below).
    for (int e = t; e < kBM * kBN; e += kThreads) {
      const int i = e / kBN, j = e % kBN;
      if (i >= rows_valid || s_cols[j] < 0) s_S[i * kLdS + j] = 0.f;
    }
    for (int p = 0; p < n_tp; ++p) {  // block-uniform
      const int first = s_probes[4 * p], n_classes = s_probes[4 * p + 1], lcol = s_probes[4 * p + 3];
      int width = 1;
      while (width < n_classes && width < 32) width <<= 1;
      const int groups = 32 / width, sub = lane % width;
      // Warp-uniform trip count: every lane reaches every shuffle; idle groups carry dummies.
      for (int ib = warp * groups; ib < rows_valid; ib += kWarps * groups) {
        const int i = ib + lane / width;
        const bool active = i < rows_valid;
        float* seg = s_S + (active ? i : 0) * kLdS + first;
        const int64_t y = active ? labels[(row0 + i) * n_label_cols + lcol] : -1;
        const bool valid = y >= 0 && y < n_classes;
        float m = -INFINITY;
        if (active)
          for (int cc = sub; cc < n_classes; cc += width) m = fmaxf(m, seg[cc]);
        m = group_max(m, width);
        float s = 0.f;
        if (active)
          for (int cc = sub; cc < n_classes; cc += width) s += expf(seg[cc] - m);
        s = group_sum(s, width);
        const float lse = m + logf(s);
        float nll = 0.f;
        if (active && sub == 0) nll = valid ? lse - seg[y] : std::numeric_limits<float>::quiet_NaN();
        // The target logit is read before any lane of the group overwrites the segment.
        __syncwarp();
        if (active)
          for (int cc = sub; cc < n_classes; cc += width) {
            const float pr = expf(seg[cc] - lse) * scale;
            seg[cc] = (valid && cc == y) ? pr - scale : pr;
          }
        nll = group_sum(nll, 32);
        if (lane == 0) atomicAdd(&s_nll[p], static_cast<double>(nll));
      }
    }
    __syncthreads();

    // ---- Phase 3: grad[0:D, tile] += X_tile^T R, bias gradient += column sums of R ----
    {
      const float* col = s_S + (t / kBN) * 64 * kLdS + (t % kBN);
      float sum = 0.f;
      for (int i = 0; i < 64; ++i) sum += col[i * kLdS];
      bias_acc += sum;
    }
    for (int d0 = 0; d0 < d; d0 += kDC) {
#pragma unroll
      for (int r = 0; r < 8; ++r)
#pragma unroll
        for (int cc = 0; cc < 8; ++cc) acc[r][cc] = 0.f;
      // Rows past N load as zeros (their residual is zero too); the pointer walks 8 rows a step.
      const typename XT::T* px = x + (row0 + x3_row) * d + d0 + x3_col;
      float4 x_reg = load_x4<XT>(px, x3_row < rows_valid, d0 + x3_col, d, x_vec);
      int buf3 = 0;
      for (int i0 = 0; i0 < rows_valid; i0 += kBK) {
        float* s_x = s_x3 + buf3 * kStageFloats;  // [kBK rows][kLdStage features]
        *reinterpret_cast<float4*>(s_x + x3_row * kLdStage + x3_col) = x_reg;
        __syncthreads();
        if (i0 + kBK < rows_valid) {
          px += static_cast<int64_t>(kBK) * d;
          x_reg = load_x4<XT>(px, i0 + kBK + x3_row < rows_valid, d0 + x3_col, d, x_vec);
        }
#pragma unroll 2
        for (int kk = 0; kk < kBK; ++kk) {
          const float4 a0 = *reinterpret_cast<const float4*>(s_x + kk * kLdStage + ty * 4);
          const float4 a1 = *reinterpret_cast<const float4*>(s_x + kk * kLdStage + 64 + ty * 4);
          const float* r_row = s_S + (i0 + kk) * kLdS;
          const float4 b0 = *reinterpret_cast<const float4*>(r_row + tx * 4);
          const float4 b1 = *reinterpret_cast<const float4*>(r_row + 64 + tx * 4);
          outer_8x8(acc, a0, a1, b0, b1);
        }
        buf3 ^= 1;
      }
#pragma unroll
      for (int r = 0; r < 8; ++r) {
        const int64_t drow = d0 + (r / 4) * 64 + ty * 4 + (r % 4);
        if (drow < d) {
          float* grad_row = grad + drow * c;
          atomic_add_group(grad_row, s_cols, tx, s_vec[tx], acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
          atomic_add_group(grad_row, s_cols, 16 + tx, s_vec[16 + tx], acc[r][4], acc[r][5], acc[r][6], acc[r][7]);
        }
      }
      // The next chunk's first store reuses a staging buffer others may still be reading.
      __syncthreads();
    }
  }

  // Block totals: one atomic per slot (bias) and per probe (loss). The last barrier of the row
  // loop ordered every loss update before these reads; a block with no row tile adds zeros.
  __syncthreads();
  if (b_col >= 0) atomicAdd(grad + d * c + b_col, bias_acc);
  for (int p = t; p < n_tp; p += kThreads) atomicAdd(nll_sum + s_probes[4 * p + 2], s_nll[p]);
}

template <typename XT>
void launch(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& params, const ProbeLayout& layout,
            at::Tensor& grad, at::Tensor& nll_sum, int64_t row_blocks) {
  const int64_t n = x.size(0), d = x.size(1), c = params.size(1);
  const auto* xp = reinterpret_cast<const typename XT::T*>(x.data_ptr());
  const bool x_vec = d % 4 == 0 && reinterpret_cast<uintptr_t>(xp) % (4 * sizeof(typename XT::T)) == 0;
  const auto gaddr = reinterpret_cast<uintptr_t>(grad.data_ptr<float>());
  const bool grad_vec4 = c % 4 == 0 && gaddr % 16 == 0, grad_vec2 = c % 2 == 0 && gaddr % 8 == 0;
  auto kernel = fused_nll_grad_kernel<XT>;
  // Above 48 KB of dynamic shared memory a kernel must opt in; the attribute is per device,
  // so it is set on every call (it costs next to nothing next to a pass).
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const dim3 grid(static_cast<unsigned>(layout.n_tiles), static_cast<unsigned>(row_blocks));
  kernel<<<grid, kThreads, kSmemBytes, c10::cuda::getCurrentCUDAStream()>>>(
      xp, labels.data_ptr<int64_t>(), params.data_ptr<float>(), layout.tile_cols.data_ptr<int32_t>(),
      layout.tile_probe_start.data_ptr<int32_t>(), layout.tile_probes.data_ptr<int32_t>(), grad.data_ptr<float>(),
      nll_sum.data_ptr<double>(), n, static_cast<int>(d), c, labels.size(1),
      static_cast<float>(1.0 / static_cast<double>(n)), x_vec, grad_vec4, grad_vec2);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor fused_nll_grad_cuda(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& params,
                               const ProbeLayout& layout, at::Tensor& grad) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 2, "fused_nll_grad_cuda: x must be a 2-D CUDA tensor");
  const auto xdt = x.scalar_type();
  TORCH_CHECK(xdt == at::kFloat || xdt == at::kBFloat16 || xdt == at::kHalf,
              "fused_nll_grad_cuda: x must be float32, bfloat16 or float16, got ", xdt);
  const int64_t n = x.size(0), d = x.size(1);
  TORCH_CHECK(d < std::numeric_limits<int>::max() - kDC, "fused_nll_grad_cuda: D = ", d, " is too large");
  TORCH_CHECK(params.scalar_type() == at::kFloat && params.dim() == 2 && params.size(0) == d + 1,
              "fused_nll_grad_cuda: params must be float32 [D+1, C]");
  TORCH_CHECK(grad.scalar_type() == at::kFloat && grad.sizes() == params.sizes(),
              "fused_nll_grad_cuda: grad must be float32 of params' shape");
  TORCH_CHECK(labels.scalar_type() == at::kLong && labels.dim() == 2 && labels.size(0) == n,
              "fused_nll_grad_cuda: labels must be int64 [N, L]");
  TORCH_CHECK(layout.fits_tiles && layout.n_cols == params.size(1) && layout.tile_cols.device() == x.device() &&
                  layout.n_tiles < std::numeric_limits<int>::max(),
              "fused_nll_grad_cuda: the layout has no column tiles for these params on ", x.device());
  for (const at::Tensor* t : {&labels, &params, static_cast<const at::Tensor*>(&grad)})
    TORCH_CHECK(t->device() == x.device(), "fused_nll_grad_cuda: all tensors must be on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), lc = labels.contiguous(), pc = params.contiguous();
  // The kernel adds into a dense row-major gradient; a strided `grad` gets the result copied in.
  at::Tensor g = grad.is_contiguous() ? grad : at::empty(grad.sizes(), grad.options());
  g.zero_();
  at::Tensor nll_sum = at::zeros({layout.n_probes}, x.options().dtype(at::kDouble));
  if (n > 0 && layout.n_tiles > 0) {
    int device_sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&device_sms, cudaDevAttrMultiProcessorCount, x.device().index()));
    // About 4 blocks per SM (2 resident at a time): enough to fill the machine and even out
    // the last wave; with fewer, larger row blocks each block pays its setup and its final
    // atomics once for several row tiles.
    const int64_t n_row_tiles = (n + kBM - 1) / kBM;
    const int64_t want = (4 * static_cast<int64_t>(std::max(device_sms, 1)) + layout.n_tiles - 1) / layout.n_tiles;
    const int64_t row_blocks = std::clamp<int64_t>(want, 1, std::min<int64_t>(n_row_tiles, 65535));
    switch (xdt) {
      case at::kFloat: launch<XF32>(xc, lc, pc, layout, g, nll_sum, row_blocks); break;
      case at::kBFloat16: launch<XBF16>(xc, lc, pc, layout, g, nll_sum, row_blocks); break;
      default: launch<XF16>(xc, lc, pc, layout, g, nll_sum, row_blocks); break;
    }
  }
  if (!g.is_same(grad)) grad.copy_(g);
  // As the chunked pass: the sum over rows / N (0 rows give 0 / 0 = NaN there as here).
  return nll_sum.div_(static_cast<double>(n));
}

}  // namespace uinfo_fast
