// CPU kernel of uinfo_fast::softmax_xent_: one row at a time, probes of a row in sequence.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <bit>
#include <limits>
#include <type_traits>
#include <vector>

#include "../softmax_xent.h"

namespace uinfo_fast {
namespace cpu_detail {

// exp for float32 that the compiler vectorises (libm's expf does not): Cephes' range reduction
// and degree-6 polynomial, about 1 ulp on the arguments used here (x - max <= 0).
inline float fast_expf(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float t = x * 1.44269504088896341f;
  const int32_t n = static_cast<int32_t>(t + std::copysign(0.5f, t));
  const float fn = static_cast<float>(n);
  const float r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  return y * std::bit_cast<float>((n + 127) << 23);
}

// One probe segment of one row, float32: returns log-sum-exp; when write_residual the segment
// becomes softmax * scale. Plain loops the compiler vectorises (max and sum with eight partial
// results, as float operations are not reassociated without -ffast-math); the AVX2 clone
// is picked at load time where the CPU has it.
__attribute__((target_clones("avx2", "default")))
float segment_lse_f32(float* seg, int64_t n_classes, float scale, bool write_residual, float* exps) {
  // Eight running maxima: one would be a chain of dependent max instructions.
  float mx[8];
  for (int j = 0; j < 8; ++j) mx[j] = seg[0];
  int64_t c = 0;
  for (; c + 8 <= n_classes; c += 8)
    for (int j = 0; j < 8; ++j) mx[j] = std::max(mx[j], seg[c + j]);
  for (; c < n_classes; ++c) mx[0] = std::max(mx[0], seg[c]);
  const float m = std::max(std::max(std::max(mx[0], mx[1]), std::max(mx[2], mx[3])),
                           std::max(std::max(mx[4], mx[5]), std::max(mx[6], mx[7])));
  for (c = 0; c < n_classes; ++c) exps[c] = fast_expf(seg[c] - m);
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  c = 0;
  for (; c + 8 <= n_classes; c += 8)
    for (int j = 0; j < 8; ++j) acc[j] += exps[c + j];
  for (; c < n_classes; ++c) acc[0] += exps[c];
  const float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  if (write_residual) {
    const float k = scale / s;
    for (int64_t j = 0; j < n_classes; ++j) seg[j] = exps[j] * k;
  }
  return m + std::log(s);
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
                       int64_t n_probes, scalar_t grad_scale, bool write_residual) {
  int64_t widest = 0;
  for (int64_t k = 0; k < n_probes; ++k) widest = std::max(widest, offsets[k + 1] - offsets[k]);
  std::vector<float> scratch(std::max<int64_t>(widest, 1));
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
      scalar_t m = -std::numeric_limits<scalar_t>::infinity();
      for (int64_t c = 0; c < n_classes; ++c) m = seg[c] > m ? seg[c] : m;
      scalar_t s = 0;
      for (int64_t c = 0; c < n_classes; ++c) s += std::exp(seg[c] - m);
      const scalar_t lse = m + std::log(s);
      const bool valid = y >= 0 && y < n_classes;
      // An out-of-range label yields NaN rather than a read outside the probe's classes;
      // the callers validate labels up front, so this only guards direct use of the op.
      nll[i * n_probes + k] = valid ? lse - seg[y] : std::numeric_limits<scalar_t>::quiet_NaN();
      if (write_residual) {
        for (int64_t c = 0; c < n_classes; ++c) seg[c] = std::exp(seg[c] - lse) * grad_scale;
        if (valid) seg[y] -= grad_scale;
      }
    }
  }
}

at::Tensor softmax_xent_cpu(const at::Tensor& logits, const at::Tensor& labels,
                            const at::Tensor& probe_offsets, const at::Tensor& probe_label_col,
                            double grad_scale, bool write_residual) {
  check_softmax_xent_args(logits, labels, probe_offsets, probe_label_col);
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
                                  write_residual);
    });
  });
  return nll;
}

}  // namespace

TORCH_LIBRARY_IMPL(uinfo_fast, CPU, m) { m.impl("softmax_xent_", &softmax_xent_cpu); }

}  // namespace uinfo_fast
