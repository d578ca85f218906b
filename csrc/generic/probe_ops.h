// The device-generic ops: written once against ATen and the device's Backend (backend.h), and
// registered for each device's dispatch key by cpu/cpu_backend.cpp and cuda/cuda_backend.cpp.
// Each op reads the run-time switches once, at its entry (switches.h).
#pragma once
#include <torch/library.h>

#include <tuple>
#include <utility>
#include <vector>

namespace uinfo_fast {

// Registers probe_objective, probe_log_likelihood and fit_probes on `m`, a
// TORCH_LIBRARY_IMPL(uinfo_fast, <device>, m) block.
void impl_generic_ops(torch::Library& m);

// A fit's results as its op returns them, one list per field with one entry per feature set,
// from one tuple of fields per feature set.
template <typename... Fields, std::size_t... I>
std::tuple<std::vector<Fields>...> by_field(const std::vector<std::tuple<Fields...>>& per_set,
                                            std::index_sequence<I...>) {
  std::tuple<std::vector<Fields>...> out;
  for (const auto& set : per_set) (std::get<I>(out).push_back(std::get<I>(set)), ...);
  return out;
}

template <typename... Fields>
std::tuple<std::vector<Fields>...> by_field(const std::vector<std::tuple<Fields...>>& per_set) {
  return by_field(per_set, std::index_sequence_for<Fields...>{});
}

// Registers mlp_probe_objective, mlp_probe_log_likelihood and fit_mlp_probes (mlp_ops.cpp); called
// by impl_generic_ops.
void impl_mlp_ops(torch::Library& m);

}  // namespace uinfo_fast
