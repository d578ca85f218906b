// The host check of fits that iterate in lockstep (the softmax and the one-hidden-layer probes'
// L-BFGS): one host synchronisation for all of them.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace uinfo_fast {

// The done flags ([K] bool, `done(fit)`) of every running fit of `fits`, copied to the host in
// one piece; then `compact(fit, flags)`, with each fit's own flags, says whether it still runs.
// Returns false when none does.
template <typename Fit, typename Done, typename Compact>
bool check_all(std::vector<Fit>& fits, Done done, Compact compact) {
  std::vector<at::Tensor> flags;
  for (const Fit& f : fits)
    if (f.running) flags.push_back(done(f));
  if (flags.empty()) return false;
  const at::Tensor host = at::cat(flags).to(at::kCPU);
  const bool* dp = host.data_ptr<bool>();
  bool any = false;
  for (Fit& f : fits) {
    if (!f.running) continue;
    const int64_t n = done(f).numel();
    f.running = compact(f, dp);
    dp += n;
    any = any || f.running;
  }
  return any;
}

}  // namespace uinfo_fast
