// The device-generic ops: written once against ATen and the device's Backend (backend.h), and
// registered for each device's dispatch key by cpu/cpu_backend.cpp and cuda/cuda_backend.cpp.
// Each op reads the run-time switches once, at its entry (switches.h).
#pragma once
#include <torch/library.h>

namespace uinfo_fast {

// Registers probe_objective, probe_log_likelihood and fit_probes on `m`, a
// TORCH_LIBRARY_IMPL(uinfo_fast, <device>, m) block.
void impl_generic_ops(torch::Library& m);

// Registers mlp_probe_objective, mlp_probe_log_likelihood and fit_mlp_probes (mlp_ops.cpp); called
// by impl_generic_ops.
void impl_mlp_ops(torch::Library& m);

}  // namespace uinfo_fast
