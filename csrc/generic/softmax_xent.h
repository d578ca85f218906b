// The one device-specific step of a probe pass: segmented log-softmax and cross-entropy.
#pragma once
#include <ATen/core/Tensor.h>

namespace uinfo_fast {

// Checks shared by the CPU and CUDA kernels of softmax_xent_ (shapes, dtypes, devices).
void check_softmax_xent_args(
    const at::Tensor& logits,       // [B, Ctot] float32/float64, contiguous
    const at::Tensor& labels,       // [B, L] int64
    const at::Tensor& probe_offsets,// [K+1] int64, column range of probe k is [off[k], off[k+1])
    const at::Tensor& probe_label_col);  // [K] int64, which label column probe k predicts

// Dispatcher call into the device kernel (CPU or CUDA) of uinfo_fast::softmax_xent_.
at::Tensor call_softmax_xent_(
    const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& probe_offsets,
    const at::Tensor& probe_label_col, double grad_scale, bool write_residual);

}  // namespace uinfo_fast
