// The CUDA kernels (this folder), reached through the CUDA Backend (cuda_backend.cpp). Compiled
// only in CUDA builds.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>

#include "../generic/backend.h"
#include "../generic/lbfgs_state.h"
#include "../generic/probe_layout.h"
#include "../generic/switches.h"

namespace uinfo_fast {

// softmax_xent_ (semantics in ops.cpp), one warp per (row, probe) segment (softmax_xent_cuda.cu).
at::Tensor softmax_xent_cuda(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& probe_offsets,
                             const at::Tensor& probe_label_col, double grad_scale, bool write_residual,
                             const Switches& sw);

// Fused pass: logits, log-softmax, loss and weight gradient in one kernel, the logits kept in
// shared memory (fused_pass_cuda.cu). Mean NLL of every probe, [K] float64, and its gradient
// written to `grad` (rows 0..D-1 weight, row D bias), with exactly nll_pass's semantics: an
// out-of-range label makes its probe's loss NaN. Requires layout.fits_tiles, CUDA tensors on
// one device, float32 params and grad.
at::Tensor fused_nll_grad_cuda(const at::Tensor& x,       // [N, D] float32/bfloat16/float16
                               const at::Tensor& labels,  // [N, L] int64
                               const at::Tensor& params,  // [D+1, C] float32
                               const ProbeLayout& layout,
                               at::Tensor& grad);         // [D+1, C] float32, overwritten

// The L-BFGS update of generic/lbfgs_update.h in three launches spread over (element chunks) x
// (probes) blocks (lbfgs_update_cuda.cu).
void lbfgs_update_cuda(FitState& st, const at::Tensor& trial, const at::Tensor& grad_trial,
                       const at::Tensor& pgrad_trial, const at::Tensor& f_trial, int64_t newest, int64_t count,
                       double ftol);

// Iteration blocks recorded and replayed as CUDA graphs (cuda_graph_runner.cpp).
std::unique_ptr<IterationBlockRunner> make_cuda_graph_runner();

}  // namespace uinfo_fast
