// CPU kernel of uinfo_fast::softmax_xent_: one row at a time, probes of a row in sequence;
// float32 through the vectorised segment_lse_f32, float64 through libm.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../generic/softmax_xent.h"
#include "cpu_kernels.h"

namespace uinfo_fast {
namespace cpu_detail {

// Cephes' expf: range reduction x = n ln2 + r, degree-6 polynomial in r, about 1 ulp for the
// arguments used here (x - max, so x <= 0; clamped at -87 so 2^n stays a normal float).
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

inline float expf_scalar(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float fn = std::nearbyint(x * kLog2e);
  const float r = (x - fn * kLn2Hi) - fn * kLn2Lo;
  float p = kP0;
  for (float c : {kP1, kP2, kP3, kP4, kP5}) p = p * r + c;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);  // std::bit_cast is C++20; torch < 2.12 builds C++17
  return (p * r * r + r + 1.0f) * scale;
}

float segment_lse_scalar(float* seg, int64_t n, float scale, bool write_residual) {
  float m = seg[0];
  for (int64_t c = 1; c < n; ++c) m = std::max(m, seg[c]);
  float s = 0.0f;
  for (int64_t c = 0; c < n; ++c) {
    const float e = expf_scalar(seg[c] - m);
    s += e;
    if (write_residual) seg[c] = e;
  }
  if (write_residual) {
    const float k = scale / s;
    for (int64_t c = 0; c < n; ++c) seg[c] *= k;
  }
  return m + std::log(s);
}

#if defined(__x86_64__)
// Eight lanes at a time; the tail of a segment (20 or 100 classes leave 4) through a lane
// mask, so no element outside [seg, seg + n) is read or written.
__attribute__((target("avx2,fma"))) inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 fn = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fn), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) float segment_lse_avx2(float* seg, int64_t n, float scale, bool write_residual) {
  const int64_t full = n / 8 * 8;
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - full)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 vm = neg_inf;
  for (int64_t c = 0; c < full; c += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(seg + c));
  if (full < n)
    vm = _mm256_max_ps(vm, _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(seg + full, tail), _mm256_castsi256_ps(tail)));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  const float m = _mm_cvtss_f32(h);
  const __m256 vmax = _mm256_set1_ps(m);
  __m256 vs = _mm256_setzero_ps();
  for (int64_t c = 0; c < full; c += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(seg + c), vmax));
    vs = _mm256_add_ps(vs, e);
    if (write_residual) _mm256_storeu_ps(seg + c, e);
  }
  if (full < n) {
    const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(seg + full, tail), vmax)),
                                   _mm256_castsi256_ps(tail));
    vs = _mm256_add_ps(vs, e);
    if (write_residual) _mm256_maskstore_ps(seg + full, tail, e);
  }
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(vs), _mm256_extractf128_ps(vs, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
  const float s = _mm_cvtss_f32(q);
  if (write_residual) {
    const __m256 k = _mm256_set1_ps(scale / s);
    for (int64_t c = 0; c < full; c += 8) _mm256_storeu_ps(seg + c, _mm256_mul_ps(_mm256_loadu_ps(seg + c), k));
    if (full < n) _mm256_maskstore_ps(seg + full, tail, _mm256_mul_ps(_mm256_maskload_ps(seg + full, tail), k));
  }
  return m + std::log(s);
}
#endif

// Whether this CPU runs the AVX2 path; UINFO_FAST_NO_AVX2=1 (Switches::no_avx2) turns it off
// per call, so tests cover the scalar path on AVX2 machines too.
bool use_avx2(const Switches& sw) {
#if defined(__x86_64__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has_avx2 && !sw.no_avx2;
#else
  (void)sw;
  return false;
#endif
}

// One probe segment of one row, float32: returns log-sum-exp; when write_residual the segment
// becomes softmax * scale. libm's expf does not vectorise, and GCC does not vectorise a scalar
// polynomial exp either, hence the intrinsics; the scalar path serves CPUs without AVX2.
float segment_lse_f32(float* seg, int64_t n_classes, float scale, bool write_residual, bool avx2) {
#if defined(__x86_64__)
  if (avx2) return segment_lse_avx2(seg, n_classes, scale, write_residual);
#else
  (void)avx2;
#endif
  return segment_lse_scalar(seg, n_classes, scale, write_residual);
}

}  // namespace cpu_detail

namespace {

template <typename scalar_t>
void softmax_xent_rows(scalar_t* logits,              // [B, Ctot]
                       const int64_t* labels,         // [B, L]
                       const int64_t* offsets,        // [K+1]
                       const int64_t* label_col,      // [K]
                       scalar_t* nll,                 // [B, K]
                       int64_t row_begin, int64_t row_end, int64_t ctot, int64_t n_label_cols,
                       int64_t n_probes, scalar_t grad_scale, bool write_residual, bool avx2) {
  for (int64_t i = row_begin; i < row_end; ++i) {
    scalar_t* row = logits + i * ctot;
    for (int64_t k = 0; k < n_probes; ++k) {
      const int64_t lo = offsets[k], hi = offsets[k + 1], col = label_col[k];
      // Inconsistent probe metadata gives NaN, never a read outside the row (same rule as CUDA).
      if (!(lo >= 0 && lo < hi && hi <= ctot && col >= 0 && col < n_label_cols)) {
        nll[i * n_probes + k] = std::numeric_limits<scalar_t>::quiet_NaN();
        continue;
      }
      scalar_t* seg = row + lo;
      const int64_t n_classes = hi - lo;
      const int64_t y = labels[i * n_label_cols + col];
      const bool valid = y >= 0 && y < n_classes;
      if constexpr (std::is_same_v<scalar_t, float>) {
        // The target logit is read before the residual overwrites the segment.
        const float target = valid ? seg[y] : 0.0f;
        const float lse = cpu_detail::segment_lse_f32(seg, n_classes, grad_scale, write_residual, avx2);
        // An out-of-range label yields NaN rather than a read outside the probe's classes;
        // the callers validate labels up front, so this only guards direct use of the op.
        nll[i * n_probes + k] = valid ? lse - target : std::numeric_limits<float>::quiet_NaN();
        if (write_residual && valid) seg[y] -= grad_scale;
        continue;
      }
      scalar_t m = -std::numeric_limits<scalar_t>::infinity();
      for (int64_t c = 0; c < n_classes; ++c) m = seg[c] > m ? seg[c] : m;
      scalar_t s = 0;
      for (int64_t c = 0; c < n_classes; ++c) s += std::exp(seg[c] - m);
      const scalar_t lse = m + std::log(s);
      nll[i * n_probes + k] = valid ? lse - seg[y] : std::numeric_limits<scalar_t>::quiet_NaN();
      if (write_residual) {
        for (int64_t c = 0; c < n_classes; ++c) seg[c] = std::exp(seg[c] - lse) * grad_scale;
        if (valid) seg[y] -= grad_scale;
      }
    }
  }
}

}  // namespace

at::Tensor softmax_xent_cpu(const at::Tensor& logits, const at::Tensor& labels,
                            const at::Tensor& probe_offsets, const at::Tensor& probe_label_col,
                            double grad_scale, bool write_residual, const Switches& sw) {
  check_softmax_xent_args(logits, labels, probe_offsets, probe_label_col);
  const bool avx2 = cpu_detail::use_avx2(sw);
  const int64_t rows = logits.size(0), ctot = logits.size(1);
  const int64_t n_probes = probe_label_col.size(0), n_label_cols = labels.size(1);
  at::Tensor nll = at::empty({rows, n_probes}, logits.options());
  const at::Tensor offsets = probe_offsets.contiguous(), cols = probe_label_col.contiguous();
  const at::Tensor labels_c = labels.contiguous();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "softmax_xent_cpu", [&] {
    scalar_t* lp = logits.data_ptr<scalar_t>();
    scalar_t* np = nll.data_ptr<scalar_t>();
    const int64_t* yp = labels_c.data_ptr<int64_t>();
    const int64_t* op = offsets.data_ptr<int64_t>();
    const int64_t* cp = cols.data_ptr<int64_t>();
    const scalar_t scale = static_cast<scalar_t>(grad_scale);
    // Rows are independent; a grain of 64 rows keeps per-task overhead small next to the exps.
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      softmax_xent_rows<scalar_t>(lp, yp, op, cp, np, begin, end, ctot, n_label_cols, n_probes, scale,
                                  write_residual, avx2);
    });
  });
  return nll;
}

}  // namespace uinfo_fast
