// The CPU entries of the backend table and of the dispatcher.
#include <torch/library.h>

#include "../generic/backend.h"
#include "../generic/probe_ops.h"
#include "../generic/switches.h"
#include "cpu_kernels.h"

namespace uinfo_fast {
namespace {

// The public op: reads the switches at its entry, as every op does (generic/switches.h).
at::Tensor softmax_xent_op(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& probe_offsets,
                           const at::Tensor& probe_label_col, double grad_scale, bool write_residual) {
  return softmax_xent_cpu(logits, labels, probe_offsets, probe_label_col, grad_scale, write_residual,
                          read_switches());
}

// The CPU has no fused pass and no recorded iteration blocks: its passes work in chunks and
// its iterations are issued one by one.
[[maybe_unused]] const bool registered =
    register_backend(c10::DeviceType::CPU, Backend{&softmax_xent_cpu, &lbfgs_update_cpu, nullptr, nullptr});

}  // namespace

TORCH_LIBRARY_IMPL(uinfo_fast, CPU, m) {
  m.impl("softmax_xent_", &softmax_xent_op);
  impl_generic_ops(m);
}

}  // namespace uinfo_fast
