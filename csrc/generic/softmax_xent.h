// The one device-specific step of a chunked probe pass, softmax_xent_: segmented log-softmax and
// cross-entropy (cpu/ and cuda/ kernels, reached through backend.h).
#pragma once
#include <ATen/core/Tensor.h>

namespace uinfo_fast {

// Checks shared by the CPU and CUDA kernels of softmax_xent_ (shapes, dtypes, devices).
void check_softmax_xent_args(
    const at::Tensor& logits,       // [B, Ctot] float32/float64, contiguous
    const at::Tensor& labels,       // [B, L] int64
    const at::Tensor& probe_offsets,// [K+1] int64, column range of probe k is [off[k], off[k+1])
    const at::Tensor& probe_label_col);  // [K] int64, which label column probe k predicts

}  // namespace uinfo_fast
