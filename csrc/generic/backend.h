// What the device-generic code needs from a device, in one table per device type.
//
// cpu/cpu_backend.cpp and cuda/cuda_backend.cpp each fill a Backend with their kernels and
// register it from a static initializer; a build without csrc/cuda simply has no CUDA entry.
// The generic code looks the table up by the features' device (backend_for) and never names a
// device itself.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <memory>

#include "lbfgs_update.h"
#include "probe_layout.h"
#include "switches.h"

namespace uinfo_fast {

// softmax_xent_ on this device (semantics in ops.cpp): segmented log-softmax and NLL [B, K] of
// the logits, rewritten in place as the residual (softmax - onehot) * grad_scale when
// write_residual.
using SoftmaxXentFn = at::Tensor (*)(const at::Tensor& logits, const at::Tensor& labels,
                                     const at::Tensor& probe_offsets, const at::Tensor& probe_label_col,
                                     double grad_scale, bool write_residual, const Switches& sw);

// A fused pass: the mean NLL of every probe into `nll` ([K] float64) and its gradient into
// `grad`, with nll_pass's semantics (probe_pass.h). Returns false, touching nothing, when it
// cannot take these inputs; the pass then works in chunks.
using FusedNllGradFn = bool (*)(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& params,
                                const ProbeLayout& layout, at::Tensor& grad, at::Tensor& nll);

// Records a block of iterations once and replays it (CUDA graphs on CUDA). A recording bakes in
// every tensor address, so it is valid only for the running set it was recorded with
// (`version`) and the history slot it started from (`newest`).
class IterationBlockRunner {
 public:
  virtual ~IterationBlockRunner() = default;
  virtual bool matches(int64_t version, int64_t newest) const = 0;
  virtual void capture(int64_t version, int64_t newest, const std::function<void()>& body) = 0;
  virtual void replay() = 0;
};

struct Backend {
  SoftmaxXentFn softmax_xent = nullptr;   // required
  LbfgsUpdateFn lbfgs_update = nullptr;   // required: the fused update (lbfgs_update.h)
  FusedNllGradFn fused_nll_grad = nullptr;                          // optional
  std::unique_ptr<IterationBlockRunner> (*make_block_runner)() = nullptr;  // optional
};

// Registers `backend` for `type`; returns true, for use in a namespace-scope initializer.
bool register_backend(c10::DeviceType type, const Backend& backend);

// The backend of `device`'s type; raises (saying how to rebuild) when this build has none.
const Backend& backend_for(c10::Device device);

}  // namespace uinfo_fast
